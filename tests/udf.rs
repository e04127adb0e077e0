//! UDF end to end: every image of `fixtures/udf/` against the reader that
//! made it or reads it independently: 7-Zip's UDF reader for the
//! genisoimage bridge (`bridge.iso.listing.tsv`), pycdlib's for its UDF
//! 2.60 image (`py260.iso.listing.tsv`: also link targets, link counts,
//! modes, unique IDs), udfinfo for the empty mkudffs volumes of every
//! revision, block size and medium (`*.udfinfo.txt`); the bridge read
//! through ISO 9660 unless `--fs udf` is asked; a live loop mount where
//! the kernel has UDF; hostile mutations give typed errors.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;

use diskimage::formats::{BlockDevice, MemoryDevice};
use diskimage::fs::udf::UdfFs;
use diskimage::fs::{ErrorKind, FileSystem, FileType, FsKind, FsOptions};

use crate::common::{diskimage, gunzip_bytes, repo, sha256_bytes, tsv_rows, Unpacked};

fn dir() -> PathBuf {
    repo().join("fixtures/udf")
}

fn bytes(name: &str) -> Vec<u8> {
    gunzip_bytes(&dir().join(format!("{name}.gz")))
}

fn device(name: &str) -> Arc<dyn BlockDevice> {
    Arc::new(MemoryDevice::new(bytes(name)))
}

fn udf(name: &str) -> Box<dyn FileSystem> {
    diskimage::fs::open_fs_as(device(name), FsKind::Udf).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `key=value` lines of a udfinfo output.
fn udfinfo(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join(format!("{name}.udfinfo.txt"))).expect("udfinfo");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One row of a truth listing (see fixtures/udf/truth.py).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    ty: String,
    size: String,
    sha256: String,
    target: String,
    nlink: String,
    uid: String,
    gid: String,
    mode: String,
    mtime: String,
    inode: String,
}

fn truth(name: &str) -> BTreeMap<String, Row> {
    tsv_rows(&dir().join(format!("{name}.listing.tsv")))
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), 11, "malformed row {r:?}");
            (
                r[0].clone(),
                Row {
                    ty: r[1].clone(),
                    size: r[2].clone(),
                    sha256: r[3].clone(),
                    target: r[4].clone(),
                    nlink: r[5].clone(),
                    uid: r[6].clone(),
                    gid: r[7].clone(),
                    mode: r[8].clone(),
                    mtime: r[9].clone(),
                    inode: r[10].clone(),
                },
            )
        })
        .collect()
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// Our view of every entry below the root, in the truth's columns.
fn walk(fs: &dyn FileSystem) -> BTreeMap<String, Row> {
    let mut out = BTreeMap::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        for e in fs
            .read_dir(&d)
            .unwrap_or_else(|e| panic!("read_dir {d}: {e}"))
        {
            let p = diskimage::fs::file_system::join(&d, &e.name);
            let m = fs
                .metadata(&p)
                .unwrap_or_else(|e| panic!("metadata {p}: {e}"));
            assert_eq!(
                m.file_type, e.file_type,
                "{p}: type in listing and metadata"
            );
            let (ty, sha256, target) = match m.file_type {
                FileType::Directory => {
                    stack.push(p.clone());
                    ("dir", "-".to_string(), "-".to_string())
                }
                FileType::File => {
                    let data = fs.read(&p).unwrap_or_else(|e| panic!("read {p}: {e}"));
                    assert_eq!(data.len() as u64, m.size, "{p}: size");
                    ("file", sha256_bytes(&data), "-".to_string())
                }
                FileType::Symlink => ("symlink", "-".to_string(), fs.read_link(&p).expect("link")),
                FileType::Special => ("special", "-".to_string(), "-".to_string()),
            };
            out.insert(
                p,
                Row {
                    ty: ty.into(),
                    size: m.size.to_string(),
                    sha256,
                    target,
                    nlink: opt(m.nlink),
                    uid: opt(m.uid),
                    gid: opt(m.gid),
                    mode: opt(m.mode.map(|m| format!("{m:o}"))),
                    mtime: opt(m.modified.map(|t| t.secs)),
                    inode: opt(m.inode),
                },
            );
        }
    }
    out
}

/// Keeps in `ours` only the columns the truth gives (not `-`).
fn as_truth_gives(
    ours: &BTreeMap<String, Row>,
    truth: &BTreeMap<String, Row>,
) -> BTreeMap<String, Row> {
    let pick = |t: &String, o: &String| if t == "-" { "-".to_string() } else { o.clone() };
    ours.iter()
        .map(|(p, o)| {
            let Some(t) = truth.get(p) else {
                return (p.clone(), o.clone());
            };
            (
                p.clone(),
                Row {
                    ty: o.ty.clone(),
                    size: pick(&t.size, &o.size),
                    sha256: pick(&t.sha256, &o.sha256),
                    target: pick(&t.target, &o.target),
                    nlink: pick(&t.nlink, &o.nlink),
                    uid: pick(&t.uid, &o.uid),
                    gid: pick(&t.gid, &o.gid),
                    mode: pick(&t.mode, &o.mode),
                    mtime: pick(&t.mtime, &o.mtime),
                    inode: pick(&t.inode, &o.inode),
                },
            )
        })
        .collect()
}

fn check_against_truth(name: &str) {
    let fs = udf(name);
    let truth = truth(name);
    let ours = walk(fs.as_ref());
    let ours = as_truth_gives(&ours, &truth);
    let missing: Vec<_> = truth.keys().filter(|p| !ours.contains_key(*p)).collect();
    let extra: Vec<_> = ours.keys().filter(|p| !truth.contains_key(*p)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: missing {missing:?}, extra {extra:?}"
    );
    for (p, t) in &truth {
        assert_eq!(&ours[p], t, "{name}: {p}");
    }
    assert!(fs.warnings().is_empty(), "{name}: {:?}", fs.warnings());
}

#[test]
fn genisoimage_bridge_udf_side_matches_7zip() {
    check_against_truth("bridge.iso");
    let fs = udf("bridge.iso");
    assert_eq!(fs.read_dir("/many").unwrap().len(), 1000);
    assert_eq!(fs.label().as_deref(), Some("BRIDGE"));
}

#[test]
fn pycdlib_udf_260_matches_pycdlib() {
    check_against_truth("py260.iso");
    let fs = udf("py260.iso");
    let info = udfinfo("py260.iso");
    assert_eq!(fs.label(), info.get("label").cloned());
    assert_eq!(fs.serial(), info.get("uuid").cloned());
    // The hard link is one entry under two names.
    let a = fs.metadata("/hello.txt").unwrap();
    let b = fs.metadata("/dir/hard.txt").unwrap();
    assert_eq!(a.inode, b.inode);
}

/// The empty volumes mkudffs makes: label, UUID, block size and revision
/// as udfinfo gives them, an empty root, opened by detection alone.
#[test]
fn mkudffs_volumes_match_udfinfo() {
    let names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('e') && n.ends_with(".img.gz"))
        .map(|n| n.trim_end_matches(".gz").to_string())
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        let info = udfinfo(&name);
        let dev = device(&name);
        let detected = diskimage::fs::detect(dev.as_ref()).unwrap().unwrap();
        assert_eq!(detected.kind, FsKind::Udf, "{name}");
        assert_eq!(detected.label, info.get("label").cloned(), "{name}");
        assert_eq!(detected.uuid, info.get("uuid").cloned(), "{name}");
        let fs = UdfFs::open(dev.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(fs.label(), info.get("label").cloned(), "{name}");
        assert_eq!(fs.serial(), info.get("uuid").cloned(), "{name}");
        assert_eq!(fs.block_size().to_string(), info["blocksize"], "{name}");
        let rev = fs.revision();
        let rev = format!("{}.{:02x}", rev >> 8, rev & 0xff);
        assert_eq!(rev, info["udfrev"], "{name}");
        let integrity = fs.integrity().expect("integrity descriptor");
        assert_eq!(integrity.files.to_string(), info["numfiles"], "{name}");
        assert_eq!(integrity.dirs.to_string(), info["numdirs"], "{name}");
        assert!(fs.read_dir("/").unwrap().len() == 0, "{name}");
        let root = fs.metadata("/").unwrap();
        assert_eq!(root.file_type, FileType::Directory);
        assert!(fs.warnings().is_empty(), "{name}: {:?}", fs.warnings());
        let generic = diskimage::fs::open_fs(dev).unwrap();
        assert_eq!(generic.kind(), FsKind::Udf, "{name}");
    }
}

/// A bridge disc is read through ISO 9660 by default; `--fs udf` reads
/// its UDF side (the same files).
#[test]
fn bridge_reads_iso9660_unless_udf_is_asked() {
    let u = Unpacked::new(&dir());
    let img = u.arg("bridge.iso");
    let fs = diskimage::fs::open_fs(device("bridge.iso")).unwrap();
    assert_eq!(fs.kind(), FsKind::Iso9660);
    let fs = diskimage::fs::open_fs_with(
        device("bridge.iso"),
        &FsOptions::default().with_kind(Some(FsKind::Udf)),
    )
    .unwrap();
    assert_eq!(fs.kind(), FsKind::Udf);
    let ls = |extra: &[&str]| {
        let mut args = vec!["ls", "--json", img.as_str(), "/dir/sub/deeper"];
        args.extend_from_slice(extra);
        let out = diskimage(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(ls(&[]).contains("deep.txt"));
    assert!(ls(&["--fs", "udf"]).contains("deep.txt"));
    let out = diskimage(&["cat", "--fs", "udf", &img, "/日本語.txt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"16-bit compressed unicode\n");
    let bad = diskimage(&["ls", "--fs", "nosuchfs", &img]);
    assert!(!bad.status.success());
}

/// `extract --fs udf` writes every file with the bytes the truth gives
/// (files stored verbatim copied by the kernel).
#[test]
fn extract_of_the_udf_side_matches_the_truth() {
    let u = Unpacked::new(&dir());
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("x");
    let r = diskimage(&[
        "extract",
        "--fs",
        "udf",
        &u.arg("py260.iso"),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for (p, row) in truth("py260.iso") {
        let host = target.join(p.trim_start_matches('/'));
        match row.ty.as_str() {
            "file" => assert_eq!(crate::common::sha256_file(&host), row.sha256, "{p}"),
            "symlink" => assert_eq!(
                std::fs::read_link(&host).unwrap().to_string_lossy(),
                row.target,
                "{p}"
            ),
            _ => assert!(host.is_dir(), "{p}"),
        }
    }
}

/// visit_dir gives what the path methods give, and the runs it calls
/// verbatim hold the file's bytes.
#[test]
fn visit_dir_and_stored_runs_agree_with_reads() {
    let dev = device("bridge.iso");
    let fs = diskimage::fs::open_fs_as(dev.clone(), FsKind::Udf).unwrap();
    let mut seen = 0;
    fs.visit_dir("/", &mut |v| {
        let v = v.expect("entry");
        let m = v.metadata().unwrap();
        assert_eq!(m, fs.metadata(&format!("/{}", v.name())).unwrap());
        if m.file_type == FileType::File {
            let mut data = Vec::new();
            v.open("").unwrap().read_to_end(&mut data).unwrap();
            if let Some(runs) = v.stored_runs() {
                let mut got = Vec::new();
                for r in runs {
                    let mut b = vec![0u8; r.len as usize];
                    dev.read_at(&mut b, r.at).unwrap();
                    got.extend(b);
                }
                assert_eq!(got, data, "{}", v.name());
                seen += 1;
            }
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(seen >= 4, "{seen} files with stored runs");
}

/// Where the kernel has a UDF driver and loop mounts are allowed, its
/// view of py260.iso is ours (sizes, bytes, link targets, link counts).
#[test]
fn kernel_loop_mount_agrees_where_available() {
    let has_udf = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.trim_end().ends_with("udf")));
    if !has_udf {
        eprintln!("skipped: this kernel has no UDF driver (/proc/filesystems); compared with the recorded listings instead");
        return;
    }
    let u = Unpacked::new(&dir());
    let mnt = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "udf", "-o", "loop,ro"])
        .arg(u.path("py260.iso"))
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: loop mount not allowed here");
        return;
    }
    let fs = udf("py260.iso");
    let ours = walk(fs.as_ref());
    let result = std::panic::catch_unwind(|| {
        for (p, row) in &ours {
            let host = mnt.path().join(p.trim_start_matches('/'));
            let md = std::fs::symlink_metadata(&host).unwrap_or_else(|e| panic!("{p}: {e}"));
            match row.ty.as_str() {
                "file" => assert_eq!(crate::common::sha256_file(&host), row.sha256, "{p}"),
                "symlink" => assert_eq!(
                    std::fs::read_link(&host).unwrap().to_string_lossy(),
                    row.target,
                    "{p}"
                ),
                _ => assert!(md.is_dir(), "{p}"),
            }
        }
    });
    let _ = std::process::Command::new("umount")
        .arg(mnt.path())
        .status();
    result.unwrap();
}

/// Byte offsets of every descriptor with tag `ident` (checksum right),
/// at 2,048-byte steps.
fn tags(b: &[u8], ident: u16) -> Vec<usize> {
    (0..b.len() / 2048)
        .map(|i| i * 2048)
        .filter(|&o| {
            b[o..o + 2] == ident.to_le_bytes()
                && b[o + 4]
                    == b[o..o + 16]
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != 4)
                        .fold(0u8, |s, (_, &x)| s.wrapping_add(x))
        })
        .collect()
}

fn fix_tag(b: &mut [u8], o: usize) {
    let crc_len = u16::from_le_bytes([b[o + 10], b[o + 11]]) as usize;
    let crc = diskimage::fs::fuzzing::crc_itu(&b[o + 16..o + 16 + crc_len]);
    b[o + 8..o + 10].copy_from_slice(&crc.to_le_bytes());
    let sum = b[o..o + 16]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .fold(0u8, |s, (_, &x)| s.wrapping_add(x));
    b[o + 4] = sum;
}

fn walk_errors(b: Vec<u8>) -> Vec<diskimage::fs::Error> {
    let fs = match UdfFs::open(Arc::new(MemoryDevice::new(b))) {
        Ok(fs) => fs,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    let mut stack = vec!["/".to_string()];
    while let Some(d) = stack.pop() {
        match fs.read_dir(&d) {
            Ok(list) => {
                for e in list {
                    let p = diskimage::fs::file_system::join(&d, &e.name);
                    match e.file_type {
                        FileType::Directory => stack.push(p),
                        FileType::File => {
                            if let Err(e) = fs.read(&p) {
                                errors.push(e)
                            }
                        }
                        _ => {
                            if let Err(e) = fs.read_link(&p) {
                                errors.push(e)
                            }
                        }
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// Hostile changes give typed errors, never a panic or a hang: an
/// indirect entry pointing at itself, an allocation descriptor past the
/// partition, a FID whose identifier length runs past the directory, a
/// huge information length, a bad CRC (a warning; strict refuses).
#[test]
fn hostile_mutations_give_typed_errors() {
    let clean = bytes("py260.iso");
    let fes = tags(&clean, 261);
    assert!(fes.len() > 10);
    let file_fe = *fes
        .iter()
        .find(|&&o| {
            clean[o + 27] == 5
                && u64::from_le_bytes(clean[o + 56..o + 64].try_into().unwrap()) == 10240
        })
        .expect("data.bin's entry");

    // An allocation descriptor past the partition.
    let mut b = clean.clone();
    let l_ea = u32::from_le_bytes(b[file_fe + 168..file_fe + 172].try_into().unwrap()) as usize;
    let ad = file_fe + 176 + l_ea;
    b[ad + 4..ad + 8].copy_from_slice(&0x00F0_0000u32.to_le_bytes());
    fix_tag(&mut b, file_fe);
    let errs = walk_errors(b);
    assert!(
        errs.iter().any(|e| e.kind() == ErrorKind::Corrupt
            && e.to_string().contains("past the end of partition")),
        "{errs:?}"
    );

    // A huge information length.
    let mut b = clean.clone();
    b[file_fe + 56..file_fe + 64].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_tag(&mut b, file_fe);
    let errs = walk_errors(b);
    assert!(errs.iter().any(|e| e.kind() == ErrorKind::Corrupt && e.to_string().contains("information length")), "{errs:?}");

    // The entry replaced by an indirect entry pointing at itself.
    let mut b = clean.clone();
    let own = u32::from_le_bytes(b[file_fe + 12..file_fe + 16].try_into().unwrap());
    b[file_fe..file_fe + 2].copy_from_slice(&259u16.to_le_bytes());
    b[file_fe + 36..file_fe + 40].copy_from_slice(&2048u32.to_le_bytes());
    b[file_fe + 40..file_fe + 44].copy_from_slice(&own.to_le_bytes());
    b[file_fe + 44..file_fe + 46].copy_from_slice(&0u16.to_le_bytes());
    b[file_fe + 10..file_fe + 12].copy_from_slice(&36u16.to_le_bytes());
    fix_tag(&mut b, file_fe);
    let errs = walk_errors(b);
    assert!(
        errs.iter().any(|e| e.to_string().contains("loop")),
        "{errs:?}"
    );

    // A FID whose identifier length runs past the directory.
    let mut b = clean.clone();
    let fids = tags(&clean, 257);
    let first = fids[0];
    b[first + 19] = 255;
    b[first + 36..first + 38].copy_from_slice(&0xFFFFu16.to_le_bytes());
    let errs = walk_errors(b);
    assert!(
        errs.iter().any(|e| e.kind() == ErrorKind::Corrupt),
        "{errs:?}"
    );

    // A bad CRC: a warning, and an error in strict mode.
    let mut b = clean.clone();
    b[file_fe + 100] ^= 0xFF;
    let fs = UdfFs::open(Arc::new(MemoryDevice::new(b.clone()))).unwrap();
    fs.read("/dir/sub/data.bin").unwrap();
    assert!(
        fs.warnings().iter().any(|w| w.contains("CRC")),
        "{:?}",
        fs.warnings()
    );
    let strict = UdfFs::open_with(
        Arc::new(MemoryDevice::new(b)),
        &FsOptions::default().with_strict(true),
    )
    .unwrap();
    let e = strict.read("/dir/sub/data.bin").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
}

/// The fuzz seeds and the fixtures, whole and cut short, through the
/// fuzz body: never a panic.
#[test]
fn fuzz_seeds_and_truncations_never_panic() {
    let seeds = repo().join("fuzz/corpus/fs_udf");
    let mut n = 0;
    for e in std::fs::read_dir(&seeds).unwrap() {
        let b = std::fs::read(e.unwrap().path()).unwrap();
        diskimage::fs::fuzzing::exercise_fs(&b);
        diskimage::fs::fuzzing::exercise_fs(&b[..b.len() * 2 / 3]);
        n += 1;
    }
    assert!(n >= 3);
    for name in ["py260.iso", "e201_cdrw.img", "e260_bdr4k.img"] {
        let b = bytes(name);
        diskimage::fs::fuzzing::exercise_fs(&b);
        diskimage::fs::fuzzing::exercise_fs(&b[..b.len() / 2]);
    }
}

/// The mkudffs volume on 4,096-byte blocks of `fixtures/schemes/`: label,
/// UUID and version as blkid gives them, and it opens.
#[test]
fn udf4k_identity_matches_blkid() {
    let topic = repo().join("fixtures/schemes");
    let blkid: BTreeMap<String, String> =
        std::fs::read_to_string(topic.join("udf4k.img.blkid.txt"))
            .expect("blkid")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let dev: Arc<dyn BlockDevice> =
        Arc::new(MemoryDevice::new(gunzip_bytes(&topic.join("udf4k.img.gz"))));
    let info = diskimage::fs::detect(dev.as_ref()).unwrap().unwrap();
    assert_eq!(info.label.as_deref(), Some(blkid["LABEL"].as_str()));
    assert_eq!(info.uuid.as_deref(), Some(blkid["UUID"].as_str()));
    let fs = UdfFs::open(dev).unwrap();
    assert_eq!(fs.block_size().to_string(), blkid["BLOCK_SIZE"]);
    let rev = fs.revision();
    assert_eq!(format!("{}.{:02x}", rev >> 8, rev & 0xff), blkid["VERSION"]);
    fs.read_dir("/").unwrap();
}
