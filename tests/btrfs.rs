//! Btrfs (fixtures/btrfs/make.sh): the images mkfs.btrfs and the kernel
//! made, listed, stat'ed, read and their links resolved, by path and
//! through `visit_dir`, against the listing a read-only loop mount gave
//! (path, type, size, sha256, target, inode, mode, uid, gid, nlink, mtime
//! in ns): the default subvolume, the top level, a 10,000-entry
//! directory; against a live loop mount where the machine allows one;
//! bad checksums and a bad primary superblock read with a warning,
//! refused in strict mode; damaged trees give errors, never panics.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::btrfs::BtrfsFs;
use diskimage::fs::{open_fs, open_fs_with, ErrorKind, FileSystem, FileType, FsOptions};

use crate::common::{gunzip_bytes, read_all, repo, sha256_bytes, tsv_rows, walk_rows};

fn dir() -> PathBuf {
    repo().join("fixtures/btrfs")
}

/// One truth row: type, size, sha256, target, inode, mode, uid, gid,
/// nlink, mtime ns (`None` for the kernel's inode-2 stand-in, whose
/// times are the time of the mount).
type Row = (
    String,
    u64,
    String,
    String,
    u64,
    u32,
    u32,
    u32,
    u64,
    Option<i128>,
);

fn parse_rows(rows: Vec<Vec<String>>) -> BTreeMap<String, Row> {
    rows.into_iter()
        .map(|r| {
            assert_eq!(r.len(), 11, "{r:?}");
            let inode: u64 = r[5].parse().expect("inode");
            (
                r[0].clone(),
                (
                    r[1].clone(),
                    r[2].parse().expect("size"),
                    r[3].clone(),
                    r[4].clone(),
                    inode,
                    u32::from_str_radix(&r[6], 8).expect("mode"),
                    r[7].parse().expect("uid"),
                    r[8].parse().expect("gid"),
                    r[9].parse().expect("nlink"),
                    (inode != 2).then(|| r[10].parse().expect("mtime")),
                ),
            )
        })
        .collect()
}

fn truth(name: &str) -> BTreeMap<String, Row> {
    parse_rows(tsv_rows(&dir().join(name)))
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

fn row(m: &diskimage::fs::Metadata, sha: String, target: String) -> Row {
    let inode = m.inode.unwrap_or(0);
    (
        type_name(m.file_type).to_string(),
        m.size,
        sha,
        target,
        inode,
        m.mode.unwrap_or(0),
        m.uid.unwrap_or(u32::MAX),
        m.gid.unwrap_or(u32::MAX),
        m.nlink.unwrap_or(0),
        (inode != 2).then(|| {
            m.modified.map_or(0, |t| {
                i128::from(t.secs) * 1_000_000_000 + i128::from(t.nanos)
            })
        }),
    )
}

/// The same tree through `visit_dir`; files stored verbatim
/// (`stored_runs`) are also read from the volume at those runs.
fn visit(fs: &dyn FileSystem, volume: &[u8]) -> Result<BTreeMap<String, Row>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        let mut err = None;
        fs.visit_dir(&d, &mut |v| {
            let v = match v {
                Ok(v) => v,
                Err((name, e)) => {
                    err = Some(format!("{d}/{name}: {e}"));
                    return ControlFlow::Break(());
                }
            };
            let p = format!("{}/{}", d.trim_end_matches('/'), v.name());
            let r = (|| -> Result<Row, String> {
                let m = v.metadata().map_err(|e| e.to_string())?;
                let mut sha = "-".to_string();
                let mut target = "-".to_string();
                match m.file_type {
                    FileType::Directory => stack.push(p.clone()),
                    FileType::File => {
                        let data = read_all(v.open("").map_err(|e| e.to_string())?)
                            .map_err(|e| e.to_string())?;
                        if let Some(runs) = v.stored_runs() {
                            let mut raw = Vec::new();
                            for r in runs {
                                let at = usize::try_from(r.at).expect("run");
                                raw.extend_from_slice(&volume[at..at + r.len as usize]);
                            }
                            if raw != data {
                                return Err("stored runs differ from the data".into());
                            }
                        }
                        sha = sha256_bytes(&data);
                    }
                    FileType::Symlink => target = v.read_link().map_err(|e| e.to_string())?,
                    FileType::Special => {}
                }
                Ok(row(&m, sha, target))
            })();
            match r {
                Ok(row) => {
                    out.insert(p, row);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    err = Some(format!("{p}: {e}"));
                    ControlFlow::Break(())
                }
            }
        })
        .map_err(|e| format!("visit_dir {d}: {e}"))?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    Ok(out)
}

fn diff(what: &str, ours: &BTreeMap<String, Row>, want: &BTreeMap<String, Row>) -> Vec<String> {
    let mut errors = Vec::new();
    for (p, w) in want {
        match ours.get(p) {
            None => errors.push(format!("{what}: {p} missing")),
            Some(o) if o != w => errors.push(format!("{what}: {p}: ours {o:?}, truth {w:?}")),
            _ => {}
        }
    }
    for p in ours.keys().filter(|p| !want.contains_key(*p)) {
        errors.push(format!("{what}: {p} not in the truth"));
    }
    errors
}

fn volume() -> Vec<u8> {
    gunzip_bytes(&dir().join("volume.img.gz"))
}

fn device(bytes: Vec<u8>) -> Arc<MemoryDevice> {
    Arc::new(MemoryDevice::new(bytes))
}

fn check(fs: &dyn FileSystem, bytes: &[u8], want: &BTreeMap<String, Row>, what: &str) {
    let mut errors = Vec::new();
    for (how, got) in [("path", walk(fs)), ("visit", visit(fs, bytes))] {
        match got {
            Ok(ours) => errors.extend(diff(&format!("{what} ({how})"), &ours, want)),
            Err(e) => errors.push(format!("{what} ({how}): {e}")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(fs.warnings().is_empty(), "{what}: {:?}", fs.warnings());
}

#[test]
fn btrfs_default_subvolume_reads_as_the_kernel_serves_it() {
    let bytes = volume();
    let want = truth("volume.img.default.tsv");
    assert!(want.len() >= 20, "{} truth rows", want.len());
    let fs = open_fs(device(bytes.clone())).expect("open");
    assert_eq!(fs.kind(), diskimage::fs::FsKind::Btrfs);
    check(fs.as_ref(), &bytes, &want, "default");
    // Files in uncompressed regular extents are stored verbatim; the
    // compressed ones are not.
    let mut runs = None;
    fs.visit_dir("/plain", &mut |v| {
        if let Ok(v) = v {
            if v.name() == "random.bin" {
                runs = Some(v.stored_runs());
            }
        }
        ControlFlow::Continue(())
    })
    .expect("visit");
    assert!(runs.flatten().is_some(), "random.bin has no stored runs");
}

#[test]
fn btrfs_top_level_reads_as_the_kernel_serves_it() {
    let bytes = volume();
    let want = truth("volume.img.top.tsv");
    for p in [
        "/root/comp/zstd.txt",
        "/snap/comp/lzo.txt",
        "/home/readme.txt",
        "/snap/nested",
    ] {
        assert!(want.contains_key(p), "{p}");
    }
    let fs = BtrfsFs::open_subvolume_id(device(bytes.clone()), &FsOptions::default(), 5)
        .expect("open top level");
    check(&fs, &bytes, &want, "top");
    // The same subvolume by path, and the default one by its path.
    let by_path = BtrfsFs::open_subvolume(device(bytes.clone()), &FsOptions::default(), "/home")
        .expect("open /home");
    assert_eq!(by_path.read("/readme.txt").expect("read"), b"a home file\n");
    let root = BtrfsFs::open_subvolume(device(bytes.clone()), &FsOptions::default(), "root")
        .expect("open root");
    let default = BtrfsFs::open(device(bytes)).expect("open default");
    assert_eq!(root.subvolume_id(), default.subvolume_id());
    assert!(root.subvolume_id() >= 256);
    assert_eq!(
        BtrfsFs::open_subvolume(device(volume()), &FsOptions::default(), "/top.txt")
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::WrongType)
    );
}

#[test]
fn btrfs_ten_thousand_entries_read_as_the_kernel_serves_them() {
    let bytes = gunzip_bytes(&dir().join("many.img.gz"));
    let listing = gunzip_bytes(&dir().join("many.img.listing.tsv.gz"));
    let rows: Vec<Vec<String>> = String::from_utf8(listing)
        .expect("utf-8")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    let want = parse_rows(rows);
    assert_eq!(want.len(), 10_001);
    let fs = open_fs(device(bytes.clone())).expect("open");
    // In index (creation) order, as readdir gives them.
    let names: Vec<String> = fs
        .read_dir("/many")
        .expect("read_dir")
        .map(|e| e.name)
        .collect();
    let sorted: Vec<String> = (0..10_000).map(|i| format!("f{i:05}")).collect();
    assert_eq!(names, sorted);
    check(fs.as_ref(), &bytes, &want, "many");
}

/// Label and UUID as mkfs.btrfs wrote them (volume.img.info.txt).
#[test]
fn btrfs_label_and_uuid_are_what_mkfs_wrote() {
    let info = std::fs::read_to_string(dir().join("volume.img.info.txt")).expect("info");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .expect(name)
    };
    let fs = open_fs(device(volume())).expect("open");
    assert_eq!(fs.label(), Some(field("label")));
    assert_eq!(fs.serial(), Some(field("fsid")));
    let d = diskimage::fs::detect(&MemoryDevice::new(volume()))
        .expect("detect")
        .expect("some");
    assert_eq!(d.uuid, Some(field("fsid")));
}

/// Finds the physical offset of the first 4 KiB block whose bytes start
/// with `needle` (a file's data), in `bytes`.
fn find_block(bytes: &[u8], needle: &[u8]) -> Option<usize> {
    (0..bytes.len() / 4096)
        .map(|i| i * 4096)
        .find(|&at| bytes[at..].starts_with(needle))
}

#[test]
fn btrfs_bad_data_checksum_is_a_warning_and_strict_refuses() {
    let mut bytes = volume();
    let want = truth("volume.img.default.tsv");
    // sparse.bin's first block starts with "data at 0".
    let at = find_block(&bytes, b"data at 0\n").expect("sparse.bin data block");
    bytes[at + 100] ^= 0xFF;
    let fs = open_fs(device(bytes.clone())).expect("open");
    let data = fs.read("/plain/sparse.bin").expect("read with a warning");
    assert_ne!(sha256_bytes(&data), want["/plain/sparse.bin"].2);
    assert!(
        fs.warnings()
            .iter()
            .any(|w| w.contains("data checksum mismatch")),
        "{:?}",
        fs.warnings()
    );
    let strict =
        open_fs_with(device(bytes), &FsOptions::default().with_strict(true)).expect("open");
    let err = strict.read("/plain/sparse.bin").expect_err("strict");
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
}

#[test]
fn btrfs_bad_primary_superblock_falls_back_to_a_mirror() {
    let mut bytes = volume();
    assert_eq!(
        &bytes[0x400_0000 + 0x40..0x400_0000 + 0x48],
        b"_BHRfS_M",
        "mirror at 64 MiB"
    );
    bytes[0x10000 + 0x100] ^= 0xFF;
    let fs = open_fs(device(bytes.clone())).expect("open through the mirror");
    assert_eq!(
        fs.read("/plain/small.txt").expect("read"),
        b"hello, btrfs\n"
    );
    assert!(
        fs.warnings().iter().any(|w| w.contains("mirror")),
        "{:?}",
        fs.warnings()
    );
    let err = open_fs_with(device(bytes), &FsOptions::default().with_strict(true))
        .err()
        .expect("strict refuses");
    assert_eq!(err.kind(), ErrorKind::Corrupt);
}

/// The volume with one byte changed, without copying it.
struct Patched {
    base: Arc<Vec<u8>>,
    at: usize,
    byte: u8,
}

impl diskimage::BlockDevice for Patched {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> diskimage::formats::Result<()> {
        let start = usize::try_from(offset).expect("offset");
        let end = start + buf.len();
        if end > self.base.len() {
            return Err(diskimage::formats::Error::out_of_range(
                diskimage::formats::Format::Raw,
                "read",
                offset,
                buf.len() as u64,
                self.base.len() as u64,
            ));
        }
        buf.copy_from_slice(&self.base[start..end]);
        if (start..end).contains(&self.at) {
            buf[self.at - start] = self.byte;
        }
        Ok(())
    }
    fn map(&self, offset: u64, len: u64) -> diskimage::formats::Result<Vec<diskimage::Extent>> {
        Ok(vec![diskimage::Extent {
            offset,
            len,
            kind: diskimage::ExtentKind::Data,
        }])
    }
}

/// Damaged tree blocks (bytes of the header and first items of each
/// node in turn set to a wrong value, the checksum left stale): errors or
/// warnings, never a panic or a hang.
#[test]
fn btrfs_damaged_trees_give_errors_not_panics() {
    let bytes = Arc::new(volume());
    let fsid = bytes[0x10020..0x10030].to_vec();
    let nodes: Vec<usize> = (0..bytes.len() / 16384)
        .map(|i| i * 16384)
        .filter(|&at| bytes[at + 0x20..at + 0x30] == fsid[..] && at != 0x10000)
        .collect();
    assert!(nodes.len() > 10, "{} tree blocks", nodes.len());
    let mut opened = 0;
    for (n, &node) in nodes.iter().enumerate() {
        for field in [0x30usize, 0x60, 0x64, 0x65, 0x6e, 0x76, 0x7a, 0x8e] {
            let at = node + field;
            let dev = Patched {
                base: bytes.clone(),
                at,
                byte: bytes[at].wrapping_add(0x41 + n as u8),
            };
            if let Ok(fs) = open_fs(Arc::new(dev)) {
                opened += 1;
                let _ = walk(fs.as_ref());
            }
        }
    }
    assert!(opened > 0);
}

/// The fixture against the kernel's own view now, through a read-only
/// loop mount, where the machine allows one (root, loop devices, btrfs).
#[test]
fn btrfs_matches_a_live_loop_mount() {
    let tmp = std::env::temp_dir().join(format!("diskimage-btrfs-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("m")).expect("tmp");
    let img = tmp.join("volume.img");
    std::fs::write(&img, volume()).expect("write image");
    let ok = std::process::Command::new("mount")
        .args(["-o", "loop,ro"])
        .arg(&img)
        .arg(tmp.join("m"))
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: cannot loop-mount a Btrfs image here (needs root and loop devices)");
        let _ = std::fs::remove_dir_all(&tmp);
        return;
    }
    let fs = open_fs(device(volume())).expect("open");
    let mut errors = Vec::new();
    let mut stack = vec![String::from("/")];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let host = tmp.join("m").join(d.trim_start_matches('/'));
        let mut kernel: Vec<String> = std::fs::read_dir(&host)
            .expect("read mount")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        kernel.sort();
        let mut ours: Vec<String> = fs.read_dir(&d).expect("read_dir").map(|e| e.name).collect();
        ours.sort();
        if kernel != ours {
            errors.push(format!("{d}: kernel {kernel:?}, ours {ours:?}"));
            continue;
        }
        for name in kernel {
            seen += 1;
            let p = format!("{}/{name}", d.trim_end_matches('/'));
            let st = std::fs::symlink_metadata(host.join(&name)).expect("lstat");
            let m = fs.metadata(&p).expect("metadata");
            use std::os::unix::fs::MetadataExt;
            if (st.ino(), st.mode(), st.size())
                != (m.inode.unwrap_or(0), m.mode.unwrap_or(0), m.size)
            {
                errors.push(format!(
                    "{p}: kernel {:?}, ours {m:?}",
                    (st.ino(), st.mode(), st.size())
                ));
            }
            if st.is_dir() {
                stack.push(p);
            } else if st.is_file()
                && std::fs::read(host.join(&name)).expect("read") != fs.read(&p).expect("read")
            {
                errors.push(format!("{p}: data differs"));
            }
        }
    }
    let _ = std::process::Command::new("umount")
        .arg(tmp.join("m"))
        .status();
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(seen > 20);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The fuzz seed (a 16 MiB --mixed volume with 4 KiB nodes, packed by
/// fixtures/btrfs/compact.py) reads the files make.sh wrote, and it and
/// its cut-short copies go through the fuzz body without a panic.
#[test]
fn btrfs_fuzz_seed_reads_and_survives_the_fuzz_body() {
    let path = repo().join("fuzz/corpus/fs_btrfs/mixed_compressed.img");
    let bytes = std::fs::read(path).expect("seed");
    let fs = open_fs(device(bytes.clone())).expect("open seed");
    for (file, word) in [("/z.txt", "zstd"), ("/l.txt", "lzo"), ("/g.txt", "zlib")] {
        let want = format!("{}\n", format!("{word} text ").repeat(900));
        assert_eq!(fs.read(file).expect(file), want.as_bytes(), "{file}");
    }
    assert_eq!(fs.read("/sv/x").expect("subvolume file"), b"x\n");
    assert_eq!(fs.read_link("/link").expect("link"), "small");
    assert!(fs.warnings().is_empty(), "{:?}", fs.warnings());
    diskimage::fs::fuzzing::exercise_fs(&bytes);
    for cut in [1, 2, 3] {
        diskimage::fs::fuzzing::exercise_fs(&bytes[..bytes.len() * cut / 4]);
    }
}

/// A Fedora-like disk (fixtures/btrfs/make-fedora.sh): the root in the
/// Btrfs subvolume `root`, `/home` in `home`, both named by fstab's
/// `subvol=` on one UUID, `/boot` on ext4: `os --json` finds the system
/// with what the script wrote and the tools reported
/// (expected-fedora.json), and the files of both subvolumes are reached.
#[test]
fn btrfs_fedora_layout_is_found_with_its_subvolumes() {
    let image = dir().join("fedora.vmdk");
    let out = crate::common::diskimage(&["os", "--json", image.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let systems = got["systems"].as_array().expect("systems");
    assert_eq!(systems.len(), 1, "{got:#}");
    let os = &systems[0];
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("expected-fedora.json")).expect("expected"),
    )
    .expect("json");
    for (k, v) in want.as_object().expect("object") {
        if k == "os_folder" {
            assert_eq!(os[k]["volume"], v["volume"], "{os:#}");
            assert_eq!(os[k]["path"], v["path"], "{os:#}");
        } else {
            assert_eq!(&os[k], v, "field {k}: {os:#}");
        }
    }
    // The btrfs volume as blkid saw it, and the home subvolume's file
    // through the volume's default (top-level) view.
    let blkid = std::fs::read_to_string(dir().join("fedora.blkid.tsv")).expect("blkid");
    assert!(blkid
        .lines()
        .any(|l| l.starts_with("2\tbtrfs\tfedora_fixture\t")));
    let cat = crate::common::diskimage(&[
        "cat",
        image.to_str().expect("path"),
        "-V",
        "2",
        "/home/user/notes.txt",
    ]);
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    assert_eq!(cat.stdout, b"a user's file\n");
    let subvols = std::fs::read_to_string(dir().join("fedora.subvolumes.txt")).expect("list");
    let ls = crate::common::diskimage(&["ls", image.to_str().expect("path"), "-V", "2", "/"]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    for l in subvols.lines() {
        let name = l.rsplit(' ').next().expect("name");
        assert!(listing.contains(name), "{name} not in {listing}");
    }
}

/// `extract` of the default subvolume (nested subvolume included, the
/// uncompressed files copied by the kernel from their stored runs) gives
/// the kernel's bytes, links and modes; `timeline` lists every entry.
#[test]
fn btrfs_extract_and_timeline_match_the_kernel_listing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let img = tmp.path().join("volume.img");
    std::fs::write(&img, volume()).expect("write");
    let out = tmp.path().join("out");
    let r = crate::common::diskimage(&[
        "extract",
        img.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = truth("volume.img.default.tsv");
    let mut errors = Vec::new();
    for (p, row) in &want {
        let host = out.join(p.trim_start_matches('/'));
        match row.0.as_str() {
            "file" => match std::fs::read(&host) {
                Ok(data) if sha256_bytes(&data) == row.2 => {}
                Ok(_) => errors.push(format!("{p}: bytes differ")),
                Err(e) => errors.push(format!("{p}: {e}")),
            },
            "symlink" => match std::fs::read_link(&host) {
                Ok(t) if t.to_string_lossy() == row.3 => {}
                other => errors.push(format!("{p}: link {other:?}")),
            },
            "dir" if !host.is_dir() => errors.push(format!("{p}: no directory")),
            _ => {}
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let t = crate::common::diskimage(&["timeline", img.to_str().expect("path")]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let text = String::from_utf8_lossy(&t.stdout);
    for p in want.keys() {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("|{p}|")) || l.contains(&format!("|{p} "))),
            "{p} not in the timeline"
        );
    }
}
