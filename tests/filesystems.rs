//! File systems end to end: every image of `fixtures/filesystems/` listed
//! with `ls -r --json` and extracted with `extract`, against the listing
//! taken from the source tree by `mktree.py` (names, types, sizes, sha256,
//! mtimes, link targets) and against TSK's `fls -r -p` stored at
//! fixture-making time. Never against our own reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::common::{dir_names, diskimage, gunzip, repo, sha256_file, tsv_rows};

fn dir() -> std::path::PathBuf {
    repo().join("fixtures/filesystems")
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

use crate::common::ListingRow as Row;

fn listing(image: &str) -> BTreeMap<String, Row> {
    crate::common::listing_tsv(&dir().join(format!("{image}.listing.tsv")))
}

/// Entries that exist on the fresh file system without being in the tree.
fn is_system(path: &str) -> bool {
    path.starts_with("/$") || path == "/lost+found"
}

fn check_image(image: &str, work: &Path) -> Vec<String> {
    check_volume(&format!("{image}.gz"), None, image, work)
}

/// Lists and extracts the file system of `gz` (a committed, gzipped image;
/// volume `volume` of it when given, `-V N`) against the truth of the
/// file-system image `image` (its listing from the source tree and TSK's
/// names).
fn check_volume(gz: &str, volume: Option<&str>, image: &str, work: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let img = work.join(gz.trim_end_matches(".gz"));
    if !img.exists() {
        gunzip(&dir().join(gz), &img);
    }
    let before = sha256_file(&img);
    let expected = listing(image);
    let fat = image.starts_with("fat");
    let vol: Vec<&str> = volume.map(|v| vec!["-V", v]).unwrap_or_default();
    let label = match volume {
        Some(v) => format!("{gz} -V {v} ({image})"),
        None => image.to_string(),
    };
    let image = label.as_str();

    let mut args = vec!["ls", "-r", "--json", img.to_str().unwrap_or_default()];
    args.extend(&vol);
    let out = diskimage(&args);
    if !out.status.success() {
        return vec![format!(
            "{image}: ls failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )];
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ls --json output");
    let mut listed = BTreeMap::new();
    for e in json.as_array().expect("array") {
        let p = e["path"].as_str().unwrap_or_default().to_string();
        if !is_system(&p) {
            listed.insert(p, e.clone());
        }
    }
    let want: BTreeSet<&String> = expected
        .iter()
        .filter(|(_, r)| r.ty != "stream")
        .map(|(p, _)| p)
        .collect();
    let got: BTreeSet<&String> = listed.keys().collect();
    for p in want.difference(&got) {
        errors.push(format!("{image}: {p} missing from ls"));
    }
    for p in got.difference(&want) {
        errors.push(format!("{image}: {p} listed but not in the source tree"));
    }
    for (p, row) in expected.iter().filter(|(_, r)| r.ty != "stream") {
        let Some(e) = listed.get(p) else { continue };
        if e["type"] != row.ty.as_str() {
            errors.push(format!("{image}: {p}: type {} != {}", e["type"], row.ty));
        }
        if row.ty != "dir" && e["size"].as_u64() != Some(row.size) {
            errors.push(format!("{image}: {p}: size {} != {}", e["size"], row.size));
        }
        if row.ty == "symlink" && e["target"] != row.target.as_str() {
            errors.push(format!(
                "{image}: {p}: target {} != {}",
                e["target"], row.target
            ));
        }
        // mcopy does not carry directory times; FAT keeps 2-second times.
        if !(fat && row.ty == "dir") {
            let secs = e["modified"]
                .as_str()
                .and_then(|s| s.split('.').next())
                .and_then(|s| s.parse::<i64>().ok());
            if secs != row.mtime {
                errors.push(format!("{image}: {p}: mtime {secs:?} != {:?}", row.mtime));
            }
        }
    }

    // TSK's view: every name fls lists (system files aside) is listed too.
    let fls = std::fs::read_to_string(dir().join(
        format!("{}.fls.txt", image.rsplit('(').next().unwrap_or_default().trim_end_matches(')')),
    ))
    .unwrap_or_default();
    for line in fls.lines() {
        let Some((_, name)) = line.split_once(":\t") else {
            continue;
        };
        let p = format!("/{name}");
        if name.contains('$') || name.contains("(Volume Label Entry)") {
            continue;
        }
        if let Some((file, stream)) = p.rsplit_once(':') {
            if !p.rsplit('/').next().unwrap_or_default().contains(':') {
                // a ':' in a directory name: not a stream
            } else {
                let ok = listed.get(file).is_some_and(|e| {
                    e["streams"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|x| x == stream))
                });
                if !ok {
                    errors.push(format!("{image}: fls stream {p} not listed"));
                }
                continue;
            }
        }
        if !listed.contains_key(&p) && !is_system(&p) {
            errors.push(format!("{image}: fls lists {p}, ls does not"));
        }
    }

    // extract: every file byte for byte, symlinks as links, streams alongside.
    let outdir = work.join(format!("{}.out", image.replace(['/', ' ', '(', ')'], "_")));
    let mut args = vec![
        "extract",
        "--streams",
        "-o",
        outdir.to_str().unwrap_or_default(),
        img.to_str().unwrap_or_default(),
    ];
    args.extend(&vol);
    let out = diskimage(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        errors.push(format!("{image}: extract failed: {stderr}"));
    }
    for (p, row) in &expected {
        let mut host = outdir.join(p.trim_start_matches('/'));
        // extract cuts a name longer than 200 bytes (exFAT's 255-unit
        // name) to 188 bytes + `~` + 8 hex digits, and says so.
        let long = host.file_name().map_or(0, |n| n.len()) > 200;
        if long {
            let name = host
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let parent = host.parent().map(Path::to_path_buf).unwrap_or_default();
            let cut = parent.join(format!("{}~", &name[..188]));
            let hit = std::fs::read_dir(&parent)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.len() == 197 && parent.join(&n[..189]) == cut
                });
            match hit {
                Some(e) if stderr.contains("renamed") => host = e.path(),
                _ => errors.push(format!("{image}: {p}: long name not cut and reported")),
            }
        }
        match row.ty.as_str() {
            "file" | "stream" => {
                if !host.is_file() || sha256_file(&host) != row.sha256 {
                    errors.push(format!("{image}: extracted {p} differs or is missing"));
                } else if let (Some(t), false) = (row.mtime, row.ty == "stream") {
                    let m = std::fs::metadata(&host).and_then(|m| m.modified()).ok();
                    let secs = m
                        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                        .map(|d| d.as_secs() as i64);
                    if secs != Some(t) {
                        errors.push(format!("{image}: extracted {p} mtime {secs:?} != {t}"));
                    }
                }
            }
            "symlink" => {
                let t = std::fs::read_link(&host).ok();
                if t.as_deref() != Some(Path::new(&row.target)) {
                    errors.push(format!("{image}: extracted link {p} -> {t:?}"));
                }
            }
            _ => {
                if !host.is_dir() {
                    errors.push(format!("{image}: extracted dir {p} missing"));
                }
            }
        }
    }
    if sha256_file(&img) != before {
        errors.push(format!("{image}: the image changed while being read"));
    }
    errors
}

#[test]
fn every_fixture_lists_and_extracts_as_the_source_tree() {
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
fn timeline_is_a_bodyfile_with_fls_names() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("ext4.img");
    gunzip(&dir().join("ext4.img.gz"), &img);
    let out = diskimage(&["timeline", img.to_str().unwrap_or_default()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let expected = listing("ext4.img");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 11, "bodyfile line {line}");
        assert_eq!(f[0], "0");
        let name = f[1].split(" -> ").next().unwrap_or_default();
        if is_system(name) {
            continue;
        }
        names.insert(name.to_string());
        if let Some(row) = expected.get(name) {
            if row.ty == "file" {
                assert_eq!(f[6], row.size.to_string(), "{line}");
            }
            assert_eq!(f[8].parse::<i64>().ok(), row.mtime, "{line}");
        }
    }
    names.retain(|n| !is_system(n));
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&names).collect();
    let extra: Vec<_> = names.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
}

#[test]
fn cat_reads_a_named_stream_and_refuses_a_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("ntfs.img");
    gunzip(&dir().join("ntfs.img.gz"), &img);
    let i = img.to_str().unwrap_or_default();
    let out = diskimage(&["cat", i, "/small.txt:ads"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"alternate data stream\n");
    // Case-insensitive lookup through $UpCase.
    let out = diskimage(&["cat", i, "/SMALL.TXT"]);
    assert_eq!(out.stdout, b"hello, file systems\n");
    let out = diskimage(&["cat", i, "/big_dir"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));
}

#[test]
fn fuzz_seeds_walk_without_panic() {
    // Every file-system target's seeds, whole and cut short.
    let mut n = 0;
    for sub in ["fs_ext", "fs_fat", "fs_exfat", "fs_ntfs", "fs_iso"] {
        let Ok(rd) = std::fs::read_dir(repo().join("fuzz/corpus").join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let bytes = std::fs::read(e.path()).expect("seed");
            diskimage::fs::fuzzing::exercise_fs(&bytes);
            diskimage::fs::fuzzing::exercise_fs(&bytes[..bytes.len() / 2]);
            n += 1;
        }
    }
    assert!(n >= 4, "only {n} file-system seeds");
    let work = tempfile::tempdir().expect("tempdir");
    for image in ["ntfs.img", "fat12.img", "exfat.img"] {
        let img = work.path().join(image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let bytes = std::fs::read(&img).expect("image");
        diskimage::fs::fuzzing::exercise_fs(&bytes);
        // Truncated volumes: runs and clusters past the end give errors
        // (for NTFS, never a short read handed to the ntfs crate, whose
        // binrw reads could panic on one: ntfs/volume_reader.rs).
        if image != "fat12.img" {
            for quarter in 1..4 {
                diskimage::fs::fuzzing::exercise_fs(&bytes[..bytes.len() * quarter / 4]);
            }
        }
        diskimage::fs::fuzzing::exercise_fs(&bytes[..bytes.len() / 3]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("pattern {needle:?} not found"))
}

/// Runs the binary and checks it ended without a panic (exit 0 or 1 with
/// a one-line error).
fn run_no_panic(args: &[&str]) -> std::process::Output {
    let out = diskimage(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("internal error") && !err.contains("panicked"),
        "{err}"
    );
    out
}

#[test]
fn hostile_names_are_renamed_and_nothing_escapes() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(repo().join("fuzz/corpus/fs_ext/ext2_tiny.img")).expect("seed");
    // The directory entry of "a.txt" (name_len 5, regular file) renamed "../..".
    let at = find(&bytes, b"\x05\x01a.txt") + 2;
    bytes[at..at + 5].copy_from_slice(b"../..");
    let img = work.path().join("hostile.img");
    std::fs::write(&img, &bytes).expect("write");
    let target = work.path().join("a/b/out");
    let out = run_no_panic(&[
        "extract",
        "-o",
        target.to_str().unwrap_or_default(),
        img.to_str().unwrap_or_default(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Either the name is refused with a typed error or renamed, never used.
    if out.status.success() {
        assert!(err.contains("renamed"), "{err}");
        assert!(target.join(".._..").is_file());
    } else {
        assert!(err.contains("corrupt") || err.contains("ext"), "{err}");
    }
    let outside: Vec<_> = std::fs::read_dir(work.path().join("a"))
        .expect("a")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("b")]);
    assert!(!work.path().join("a.txt").exists());
}

#[test]
fn directory_loop_is_reported_and_not_entered() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(repo().join("fuzz/corpus/fs_ext/ext2_tiny.img")).expect("seed");
    // d/b (name_len 1, regular file) made a directory entry for the root inode.
    let at = find(&bytes, b"\x01\x01b");
    bytes[at - 6..at - 2].copy_from_slice(&2u32.to_le_bytes());
    bytes[at + 1] = 2;
    let img = work.path().join("loop.img");
    std::fs::write(&img, &bytes).expect("write");
    // The loop is seen by inode (the root's own), reported, and not
    // entered: the listing is the tree once, not 256 nested copies.
    for cmd in ["ls", "timeline"] {
        let mut args = vec![cmd, img.to_str().unwrap_or_default()];
        if cmd == "ls" {
            args.insert(1, "-r");
        }
        let out = run_no_panic(&args);
        assert!(!out.status.success(), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("directory loop: inode 2 is this directory's own ancestor"),
            "{cmd}: {err}"
        );
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        assert!((2..20).contains(&lines), "{cmd}: {lines} lines");
    }
    // extract writes the tree once, the looping directory empty.
    let outdir = work.path().join("out");
    let out = run_no_panic(&[
        "extract",
        "-o",
        outdir.to_str().unwrap_or_default(),
        img.to_str().unwrap_or_default(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("directory loop: inode 2"), "extract: {err}");
    let written = walkdir_count(&outdir);
    assert!(
        (2..20).contains(&written),
        "extract wrote {written} entries"
    );
}

fn walkdir_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    1 + if e.file_type().is_ok_and(|t| t.is_dir()) {
                        walkdir_count(&e.path())
                    } else {
                        0
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn broken_mft_fixup_is_a_typed_error() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("ntfs.img");
    gunzip(&dir().join("ntfs.img.gz"), &img);
    let mut bytes = std::fs::read(&img).expect("image");
    let bps = u64::from(u16::from_le_bytes([bytes[11], bytes[12]]));
    let cluster = bps * u64::from(bytes[13]);
    let mft = u64::from_le_bytes(bytes[0x30..0x38].try_into().expect("8 bytes")) * cluster;
    // Record 5 (the root directory): break the fixup of its first sector.
    let rec = usize::try_from(mft + 5 * 1024).expect("offset");
    assert_eq!(&bytes[rec..rec + 4], b"FILE");
    bytes[rec + 510] ^= 0xFF;
    std::fs::write(&img, &bytes).expect("write");
    let out = run_no_panic(&["ls", img.to_str().unwrap_or_default()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NTFS: corrupt"), "{err}");
}

#[test]
fn fat_cluster_cycle_terminates() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(repo().join("fuzz/corpus/fs_fat/fat12_tiny.img")).expect("seed");
    let bps = usize::from(u16::from_le_bytes([bytes[11], bytes[12]]));
    let reserved = usize::from(u16::from_le_bytes([bytes[14], bytes[15]]));
    let fats = usize::from(bytes[16]);
    let fat_sz = usize::from(u16::from_le_bytes([bytes[22], bytes[23]]));
    let root = (reserved + fats * fat_sz) * bps;
    let ent = root + find(&bytes[root..], b"A       TXT");
    let cluster = usize::from(u16::from_le_bytes([bytes[ent + 26], bytes[ent + 27]]));
    // The file claims 1 MiB and its one cluster points to itself.
    bytes[ent + 28..ent + 32].copy_from_slice(&(1u32 << 20).to_le_bytes());
    for f in 0..fats {
        let fat = (reserved + f * fat_sz) * bps;
        let off = fat + cluster * 3 / 2;
        let v = u16::from_le_bytes([bytes[off], bytes[off + 1]]);
        let v = if cluster % 2 == 0 {
            (v & 0xF000) | cluster as u16
        } else {
            (v & 0x000F) | ((cluster as u16) << 4)
        };
        bytes[off..off + 2].copy_from_slice(&v.to_le_bytes());
    }
    let img = work.path().join("cycle.img");
    std::fs::write(&img, &bytes).expect("write");
    let out = run_no_panic(&["cat", img.to_str().unwrap_or_default(), "/a.txt"]);
    // Reading stops: at the file size, or with an error.
    assert!(out.stdout.len() <= 1 << 20);
}

/// One line of a TSK 3.x bodyfile, split into its 11 fields.
fn body_fields(line: &str) -> Vec<String> {
    let f: Vec<String> = line.split('|').map(str::to_owned).collect();
    assert_eq!(f.len(), 11, "bodyfile line {line}");
    f
}

/// Entries of TSK's bodyfile that are TSK's own view, not a file: the
/// orphan folder, NTFS `$FILE_NAME` time lines, FAT volume-label entries,
/// alternate data streams (listed by `ls`, not `timeline`), system files.
fn tsk_only(name: &str) -> bool {
    name.contains("$OrphanFiles")
        || name.ends_with(" ($FILE_NAME)")
        || name.ends_with("(Volume Label Entry)")
        || name.contains(':')
        || is_system(name)
}

/// A bodyfile name without its ` -> target` (TSK leaves the target out
/// of some slow ext4 symlinks; targets are checked against the source tree
/// by every_fixture_lists_and_extracts_as_the_source_tree).
fn link_name(name: &str) -> String {
    name.split(" -> ").next().unwrap_or_default().to_string()
}

/// `timeline` against TSK's `fls -m / -r` of the same image (committed by
/// make.sh): the same names; per name the same inode (MFT record number
/// on NTFS), file size and times in seconds; on ext also the mode string,
/// uid and gid. FAT and exFAT have no inodes: TSK numbers directory-entry
/// slots, we do not (a gap checked below to stay absent, not to be wrong).
/// TSK 4.11 leaves out exFAT's 10 ms increment, which carries the odd
/// second of a modify or create time: there TSK is one second behind (the
/// source tree's second is checked by
/// every_fixture_lists_and_extracts_as_the_source_tree).
#[test]
fn timeline_agrees_with_fls_bodyfile_on_every_fixture() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut errors = Vec::new();
    for image in images() {
        let img = work.path().join(&image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let out = diskimage(&["timeline", img.to_str().unwrap_or_default()]);
        if !out.status.success() {
            errors.push(format!(
                "{image}: timeline failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let ours: BTreeMap<String, Vec<String>> = text
            .lines()
            .map(body_fields)
            .filter(|f| !tsk_only(&f[1]))
            .map(|f| (link_name(&f[1]), f))
            .collect();
        let truth_text =
            std::fs::read_to_string(dir().join(format!("{image}.body.txt"))).expect("body");
        let truth: BTreeMap<String, Vec<String>> = truth_text
            .lines()
            .map(body_fields)
            .filter(|f| !tsk_only(&f[1]))
            .map(|f| (link_name(&f[1]), f))
            .collect();
        let a: BTreeSet<_> = ours.keys().collect();
        let b: BTreeSet<_> = truth.keys().collect();
        if a != b {
            errors.push(format!(
                "{image}: names only ours {:?}, only TSK {:?}",
                a.difference(&b).take(5).collect::<Vec<_>>(),
                b.difference(&a).take(5).collect::<Vec<_>>()
            ));
        }
        let ext = image.starts_with("ext");
        let exfat = image.starts_with("exfat");
        let fat = image.starts_with("fat") || exfat;
        for (name, t) in &truth {
            let Some(o) = ours.get(name) else { continue };
            let tsk_inode = t[2].split('-').next().unwrap_or_default();
            if fat {
                if o[2] != "0" {
                    errors.push(format!("{image}: {name}: FAT inode {} given", o[2]));
                }
            } else if o[2] != tsk_inode {
                errors.push(format!("{image}: {name}: inode {} != TSK {}", o[2], t[2]));
            }
            let is_file = t[3].starts_with("r/");
            // Directory sizes differ by design on FAT and NTFS (TSK gives
            // the allocation or the index root size); ext's i_size is both.
            let mut fields = vec![];
            if is_file || ext {
                fields.push(6);
            }
            // atime, mtime, ctime, crtime
            fields.extend([7, 8, 9, 10]);
            if ext {
                fields.extend([3, 4, 5]);
            }
            for i in fields {
                // TSK reads the birth time only on ext4; debugfs shows
                // ext2/ext3 large inodes have one (checked against
                // debugfs in ext_metadata_matches_debugfs_stat).
                let no_tsk_crtime = i == 10 && t[i] == "0" && ext && !image.starts_with("ext4");
                let tsk_drops_10ms = exfat
                    && (i == 8 || i == 10)
                    && o[i].parse::<i64>().ok() == t[i].parse::<i64>().ok().map(|t| t + 1);
                if o[i] != t[i] && !no_tsk_crtime && !tsk_drops_10ms {
                    errors.push(format!(
                        "{image}: {name}: field {i} is {} where TSK has {}",
                        o[i], t[i]
                    ));
                }
            }
        }
        // mactime (Debian sleuthkit) must accept the bodyfile as is.
        let body = work.path().join(format!("{image}.body"));
        std::fs::write(&body, &text).expect("write");
        match std::process::Command::new("mactime")
            .args(["-b", body.to_str().unwrap_or_default(), "-d", "-z", "UTC"])
            .output()
        {
            Ok(m) if m.status.success() && !m.stdout.is_empty() => {}
            Ok(m) => errors.push(format!(
                "{image}: mactime refused the bodyfile: {}",
                String::from_utf8_lossy(&m.stderr)
            )),
            Err(e) => panic!("mactime (Debian package sleuthkit, installed by .ci/run) is needed to check the bodyfile: {e}"),
        }
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `ls -r --json` on ext against `debugfs stat` of every inode (committed
/// by make.sh): inode number, link count, mode with type bits, uid, gid,
/// size and all four times with nanoseconds.
#[test]
fn ext_metadata_matches_debugfs_stat() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut errors = Vec::new();
    for image in images().into_iter().filter(|i| i.starts_with("ext")) {
        let img = work.path().join(&image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let out = diskimage(&["ls", "-r", "--json", img.to_str().unwrap_or_default()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let listed: BTreeMap<String, serde_json::Value> = json
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap_or_default().to_string(),
                    e.clone(),
                )
            })
            .collect();
        let rows = tsv_rows(&dir().join(format!("{image}.stat.tsv")));
        assert!(rows.len() > 1000, "{image}: stat truth too short");
        for r in rows {
            if r[0] == "/" {
                continue;
            }
            let Some(e) = listed.get(&r[0]) else {
                errors.push(format!("{image}: {} not listed", r[0]));
                continue;
            };
            let num = |k: &str| e[k].as_u64().map(|v| v.to_string()).unwrap_or_default();
            let time = |k: &str| e[k].as_str().unwrap_or("-").to_string();
            let got = [
                num("inode"),
                num("nlink"),
                e["mode"].as_str().unwrap_or_default().to_string(),
                num("uid"),
                num("gid"),
                num("size"),
                time("accessed"),
                time("modified"),
                time("changed"),
                time("created"),
            ];
            if got[..] != r[1..] {
                errors.push(format!(
                    "{image}: {}: ours {got:?}, debugfs {:?}",
                    r[0],
                    &r[1..]
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// File systems inside partitioned disks inside containers (made by
/// make_containers.sh): `ls -r --json -V N` and `extract -V N` through
/// VMDK (monolithicSparse, streamOptimized) or VHDX, MBR or GPT, give the
/// same listing and bytes as the bare file-system image.
#[test]
fn file_systems_inside_containers_list_and_extract() {
    let work = tempfile::tempdir().expect("tempdir");
    let rows = tsv_rows(&dir().join("containers.tsv"));
    assert!(rows.len() >= 6, "containers.tsv too short");
    let mut errors = Vec::new();
    for r in &rows {
        errors.extend(check_volume(&r[0], Some(&r[1]), &r[2], work.path()));
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The exFAT fixture and its fuzz seeds, opened through the library.
fn exfat(bytes: Vec<u8>) -> diskimage::fs::Result<diskimage::fs::exfat::ExFatFs> {
    diskimage::fs::exfat::ExFatFs::open(std::sync::Arc::new(diskimage::formats::MemoryDevice::new(
        bytes,
    )))
}

fn exfat_fixture() -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("exfat.img");
    gunzip(&dir().join("exfat.img.gz"), &img);
    std::fs::read(&img).expect("image")
}

/// Byte offset of the File entry (0x85) of the entry set named `name`
/// (at most 15 UTF-16 units: one File Name entry) in an exFAT image.
fn exfat_set(bytes: &[u8], name: &str) -> usize {
    let units: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut needle = vec![0xC1, 0x00];
    needle.extend(&units);
    let at = find(bytes, &needle) - 64;
    assert_eq!(bytes[at], 0x85, "{name}: File entry");
    assert_eq!(bytes[at + 32], 0xC0, "{name}: stream extension");
    at
}

/// Recomputes the SetChecksum of the entry set at `at` (exFAT
/// specification 6.3.3: 16-bit rotate right, add each byte, the checksum
/// field left out).
fn exfat_fix_set_checksum(bytes: &mut [u8], at: usize) {
    let len = (usize::from(bytes[at + 1]) + 1) * 32;
    let mut sum = 0u16;
    for (i, &b) in bytes[at..at + len].iter().enumerate() {
        if i != 2 && i != 3 {
            sum = sum.rotate_right(1).wrapping_add(u16::from(b));
        }
    }
    bytes[at + 2..at + 4].copy_from_slice(&sum.to_le_bytes());
}

/// exFAT (mkfs.exfat, filled by exfat-fuse): label and serial as blkid
/// gives them (exfat.img.blkid.txt, taken by make.sh); names looked up
/// ignoring case through the up-case table (É for é); the modify time's
/// odd second from the 10 ms increment (exfat-fuse stores whole seconds
/// there: 100 = 1.00 s); the fragmented files really have FAT chains.
#[test]
fn exfat_label_serial_case_and_times() {
    use diskimage::fs::FileSystem;
    use std::io::Read;
    let bytes = exfat_fixture();
    let blkid = std::fs::read_to_string(dir().join("exfat.img.blkid.txt")).expect("blkid");
    let field = |k: &str| {
        blkid
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::to_owned)
    };
    for frag in ["frag_a.bin", "frag_b.bin"] {
        let at = exfat_set(&bytes, frag);
        assert_eq!(
            bytes[at + 33] & 2,
            0,
            "{frag}: NoFatChain set, not fragmented"
        );
    }
    assert_eq!(bytes[exfat_set(&bytes, "small.txt") + 33] & 2, 2);
    let fs = exfat(bytes).expect("open");
    assert_eq!(fs.label(), field("LABEL="));
    assert_eq!(fs.serial(), field("UUID="));
    assert!(fs.up_case_from_volume());
    assert_eq!(fs.boot_region(), diskimage::fs::exfat::BootRegion::Main);
    assert!(!fs.case_sensitive());
    let mut s = String::new();
    fs.open("/SMALL.TXT")
        .expect("open")
        .read_to_string(&mut s)
        .expect("read");
    assert_eq!(s, "hello, file systems\n");
    assert_eq!(fs.metadata("/CAFÉ.TXT").expect("café").size, 7);
    assert!(fs.metadata("/cafe.txt").is_err());
    let m = fs.metadata("/odd_time.txt").expect("odd_time");
    assert_eq!(
        m.modified,
        Some(diskimage::fs::Timestamp {
            secs: 1_600_000_001,
            nanos: 0
        })
    );
    let attrs = fs.attributes("/big_dir").expect("attributes");
    assert_eq!(attrs & diskimage::fs::exfat::attr::DIRECTORY, 0x10);
    // CLI: volumes names it, ls reads it (with and without -V).
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("exfat.img");
    gunzip(&dir().join("exfat.img.gz"), &img);
    let i = img.to_str().unwrap_or_default();
    let out = diskimage(&["volumes", i]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("exfat"));
    for args in [vec!["ls", i], vec!["ls", "-V", "1", i]] {
        let out = run_no_panic(&args);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("frag_a.bin"));
    }
}

/// A damaged main boot region (one byte of its checksummed sectors
/// changed) is read through the backup region, the same files; with both
/// damaged, a typed corrupt error naming the checksum's offset.
#[test]
fn exfat_damaged_boot_region_uses_the_backup_then_fails_typed() {
    use diskimage::fs::exfat::BootRegion;
    let mut bytes = exfat_fixture();
    let good: Vec<String> = dir_names(&exfat(bytes.clone()).expect("open"), "/");
    bytes[120] ^= 0xFF; // boot code
    let fs = exfat(bytes.clone()).expect("backup region");
    assert_eq!(fs.boot_region(), BootRegion::Backup);
    let names: Vec<String> = dir_names(&fs, "/");
    assert_eq!(names, good);
    bytes[12 * 512 + 120] ^= 0xFF;
    let e = exfat(bytes.clone()).err().expect("both regions damaged");
    assert_eq!(e.kind(), diskimage::fs::ErrorKind::Corrupt);
    assert!(
        e.to_string()
            .contains("exFAT: corrupt at 0x1600: boot region checksum: stored 0x"),
        "{e}"
    );
    // Through the CLI: one line, no panic.
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("broken.img");
    std::fs::write(&img, &bytes).expect("write");
    let out = run_no_panic(&["ls", img.to_str().unwrap_or_default()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exFAT: corrupt"));
}

/// An up-case table whose checksum does not match (the root's up-case
/// entry's TableChecksum changed) is not used: lookups fall back to
/// Unicode's simple upper case, and say so.
#[test]
fn exfat_bad_up_case_table_falls_back() {
    use diskimage::fs::FileSystem;
    let mut bytes = exfat_fixture();
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let shift = u32::from(bytes[108]);
    let heap = (u32_at(&bytes, 88) as usize) << shift;
    let cluster = 1usize << (shift + u32::from(bytes[109]));
    let root = heap + (u32_at(&bytes, 96) as usize - 2) * cluster;
    let entry = (root..root + cluster)
        .step_by(32)
        .find(|&e| bytes[e] == 0x82)
        .expect("up-case table entry in the root's first cluster");
    bytes[entry + 4] ^= 0xFF;
    let fs = exfat(bytes).expect("open");
    assert!(!fs.up_case_from_volume());
    assert_eq!(fs.metadata("/CAFÉ.TXT").expect("café").size, 7);
}

/// ValidDataLength below DataLength (small.txt's lowered to 5, its set
/// checksum redone): the bytes past it read as zeros (specification
/// 7.6.5), the size stays DataLength.
#[test]
fn exfat_bytes_past_valid_data_length_read_as_zeros() {
    use diskimage::fs::FileSystem;
    use std::io::Read;
    let mut bytes = exfat_fixture();
    let at = exfat_set(&bytes, "small.txt");
    bytes[at + 40..at + 48].copy_from_slice(&5u64.to_le_bytes());
    exfat_fix_set_checksum(&mut bytes, at);
    let fs = exfat(bytes).expect("open");
    let mut data = Vec::new();
    fs.open("/small.txt")
        .expect("open")
        .read_to_end(&mut data)
        .expect("read");
    let mut want = b"hello".to_vec();
    want.resize(20, 0);
    assert_eq!(data, want);
}

/// Hostile exFAT: a FAT chain that loops back (frag_a.bin's second
/// cluster pointing at its first) and a first cluster past the heap are
/// typed corrupt errors; a broken SetChecksum is an error for that entry
/// alone, the others are still visited.
#[test]
fn exfat_cycles_and_bad_sets_are_typed_errors() {
    use diskimage::fs::{ErrorKind, FileSystem};
    use std::io::Read;
    use std::ops::ControlFlow;
    let orig = exfat_fixture();
    let fat = usize::try_from(u32::from_le_bytes(orig[80..84].try_into().expect("4")))
        .expect("fat")
        << orig[108];
    let at = exfat_set(&orig, "frag_a.bin");
    let first = u32::from_le_bytes(orig[at + 52..at + 56].try_into().expect("4"));
    let second = usize::try_from(u32::from_le_bytes(
        orig[fat + first as usize * 4..fat + first as usize * 4 + 4]
            .try_into()
            .expect("4"),
    ))
    .expect("cluster");
    let mut bytes = orig.clone();
    bytes[fat + second * 4..fat + second * 4 + 4].copy_from_slice(&first.to_le_bytes());
    let fs = exfat(bytes).expect("open");
    let e = fs.open("/frag_a.bin").err().expect("a cycle is an error");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("comes twice in the chain"), "{e}");
    let mut sink = Vec::new();
    fs.open("/frag_b.bin")
        .expect("the other file")
        .read_to_end(&mut sink)
        .expect("read");
    assert_eq!(sink.len(), 40_000);

    let mut bytes = orig.clone();
    bytes[at + 52..at + 56].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    exfat_fix_set_checksum(&mut bytes, at);
    let e = exfat(bytes)
        .expect("open")
        .open("/frag_a.bin")
        .err()
        .expect("past the heap");
    assert!(
        e.to_string().contains("outside the cluster heap") && e.to_string().contains(" at 0x"),
        "{e}"
    );

    let mut bytes = orig;
    let small = exfat_set(&bytes, "small.txt");
    bytes[small + 2] ^= 0xFF;
    let fs = exfat(bytes).expect("open");
    let (mut ok, mut bad) = (0, Vec::new());
    fs.visit_dir("/", &mut |v| {
        match v {
            Ok(_) => ok += 1,
            Err((name, e)) => bad.push((name, e.kind(), e.to_string())),
        }
        ControlFlow::Continue(())
    })
    .expect("visit");
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, "small.txt");
    assert_eq!(bad[0].1, ErrorKind::Corrupt);
    assert!(bad[0].2.contains("SetChecksum"), "{}", bad[0].2);
    assert_eq!(ok, 11, "the other root entries");
    assert_eq!(
        fs.read_dir("/").err().map(|e| e.kind()),
        Some(ErrorKind::Corrupt)
    );
}

/// An extent pointing past the end of the volume (a one-block file of
/// ext4_nocsum.img, its extent's start block made 0xFFFFFF00): a typed
/// corrupt error naming the offset, the other files still extracted.
#[test]
fn ext_extent_past_the_volume_is_a_typed_error() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("ext4.img");
    gunzip(&dir().join("ext4_nocsum.img.gz"), &img);
    let mut bytes = std::fs::read(&img).expect("image");
    // Extent header (magic, 1 entry, max 4, depth 0, generation 0), then
    // a leaf for file block 0, 1 block long, start_hi 0.
    let leaf = b"\x0a\xf3\x01\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00";
    // The first such leaf in a regular file's inode (i_block is at 0x28).
    let at = (0..bytes.len() - leaf.len())
        .find(|&i| {
            bytes[i..i + leaf.len()] == leaf[..]
                && i >= 0x28
                && u16::from_le_bytes([bytes[i - 0x28], bytes[i - 0x27]]) & 0xF000 == 0x8000
        })
        .expect("a one-block regular file")
        + leaf.len();
    bytes[at..at + 4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
    std::fs::write(&img, &bytes).expect("write");
    let out_dir = work.path().join("out");
    let out = run_no_panic(&[
        "extract",
        "-o",
        out_dir.to_str().unwrap_or_default(),
        img.to_str().unwrap_or_default(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt")
            && err.contains("past the end of the volume")
            && err.contains(" at 0x"),
        "{err}"
    );
    assert!(out_dir.join("small.txt").is_file());
}

/// A name with `\` (a mutated directory entry of the ext2 seed) is
/// extracted under a safe name inside the target and the rename reported;
/// a name with NUL is a typed corrupt error. Nothing
/// is written outside the target either way.
#[test]
fn backslash_and_nul_names_are_renamed_or_refused_inside_the_target() {
    for (name, ok) in [(b"a\\b.t", true), (b"a\x00b.t", false)] {
        let work = tempfile::tempdir().expect("tempdir");
        let mut bytes =
            std::fs::read(repo().join("fuzz/corpus/fs_ext/ext2_tiny.img")).expect("seed");
        let at = find(&bytes, b"\x05\x01a.txt") + 2;
        bytes[at..at + 5].copy_from_slice(name);
        let img = work.path().join("names.img");
        std::fs::write(&img, &bytes).expect("write");
        let target = work.path().join("t");
        let out = run_no_panic(&[
            "extract",
            "-o",
            target.to_str().unwrap_or_default(),
            img.to_str().unwrap_or_default(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert!(out.status.success() && err.contains("renamed"), "{err}");
            assert!(target.join("a_b.t").is_file(), "{err}");
        } else {
            assert!(!out.status.success(), "{err}");
            assert!(
                err.contains("corrupt") && err.contains("null byte"),
                "{err}"
            );
        }
        let mut outside: Vec<_> = std::fs::read_dir(work.path())
            .expect("work")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        outside.sort();
        assert!(
            outside.len() <= 2 && outside[0] == "names.img",
            "{outside:?}"
        );
    }
}

/// `visit_dir` (the walk `extract` uses, each entry read from its
/// directory entry) gives for every entry of every fixture what the path
/// methods give: the same names, metadata, data, link targets and streams;
/// and where it says a file's data is stored verbatim (`stored_runs`, which
/// `extract` has the kernel copy), the volume holds those bytes there.
#[test]
fn visit_dir_agrees_with_the_path_methods_on_every_fixture() {
    use diskimage::fs::{file_system::join, FileReader, FileType};
    use std::io::Read;
    use std::ops::ControlFlow;
    fn bytes(r: diskimage::fs::Result<Box<dyn FileReader + '_>>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        r.ok()?.read_to_end(&mut out).ok()?;
        Some(out)
    }
    let work = tempfile::tempdir().expect("tempdir");
    for image in images() {
        let img = work.path().join(&image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        let device = diskimage::open(&img, &diskimage::OpenOptions::default())
            .expect("open")
            .device();
        let fs = diskimage::fs::open_fs(device.clone()).expect("open_fs");
        let (mut stack, mut seen, mut stored) = (vec!["/".to_string()], 0usize, 0usize);
        while let Some(d) = stack.pop() {
            let listed: BTreeSet<String> = dir_names(fs.as_ref(), &d);
            let mut visited = BTreeSet::new();
            fs.visit_dir(&d, &mut |v| {
                let v = v.unwrap_or_else(|(n, e)| panic!("{image}: {d} {n}: {e}"));
                let p = join(&d, v.name());
                visited.insert(v.name().to_string());
                let m = v.metadata().expect("metadata");
                assert_eq!(Some(&m), fs.metadata(&p).ok().as_ref(), "{image}: {p}");
                match m.file_type {
                    FileType::Directory => stack.push(p.clone()),
                    FileType::File => {
                        let data = bytes(v.open(""));
                        assert!(data.is_some(), "{image}: {p} unreadable");
                        assert_eq!(data, bytes(fs.open(&p)), "{image}: {p}");
                        // Where the data is said to be stored verbatim, it is.
                        if let Some(runs) = v.stored_runs() {
                            let mut at_runs = Vec::new();
                            for r in runs {
                                let mut b = vec![0u8; usize::try_from(r.len).expect("len")];
                                device.read_at(&mut b, r.at).expect("run on the volume");
                                at_runs.extend(b);
                            }
                            assert_eq!(Some(at_runs), data, "{image}: {p} stored runs");
                            stored += 1;
                        }
                    }
                    FileType::Symlink => {
                        assert_eq!(v.read_link().ok(), fs.read_link(&p).ok(), "{image}: {p}");
                    }
                    FileType::Special => {}
                }
                let streams = v.streams().expect("streams");
                assert_eq!(streams, fs.streams(&p).expect("streams"), "{image}: {p}");
                for s in streams {
                    let sp = format!("{p}:{s}");
                    assert_eq!(bytes(v.open(&s)), bytes(fs.open(&sp)), "{image}: {sp}");
                }
                seen += 1;
                ControlFlow::Continue(())
            })
            .expect("visit_dir");
            assert_eq!(visited, listed, "{image}: {d}");
        }
        assert!(seen >= 10, "{image}: {seen} entries");
        // ext and NTFS say where their files are stored (FAT and exFAT do
        // not yet: their files are extracted through the reader).
        if !image.starts_with("fat") && !image.starts_with("exfat") {
            assert!(stored >= 5, "{image}: {stored} files with stored runs");
        }
    }
}

/// What an extracted tree holds, for comparing two extractions: per path
/// (relative to the target), its kind and sha256 or link target, and the
/// modification time to the nanosecond of a file or directory stamped by
/// the extraction that began at `started`.
fn tree_snapshot(root: &Path, started: std::time::SystemTime) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            let m = std::fs::symlink_metadata(&p).expect("metadata");
            // A time from `started` on is the time of the extraction (no
            // time to set: a stream, a time before 1970), not compared.
            let mtime = m
                .modified()
                .ok()
                .filter(|&t| t < started)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos());
            let what = if m.file_type().is_symlink() {
                // (a link's own time is when it was made: not compared)
                out.insert(rel, format!("link {:?}", std::fs::read_link(&p).ok()));
                continue;
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else {
                format!("file {}", sha256_file(&p))
            };
            out.insert(rel, format!("{what} {mtime:?}"));
        }
    }
    out
}

/// `extract --threads 3` (threads taking whole directories) and the copy
/// by the kernel of files stored verbatim in an image file give the tree,
/// stderr report and exit status of `--threads 1 --no-kernel-copy`, on
/// every fixture, one inside a VMDK (whose files the kernel copies), and
/// an ext2 fixture whose names were made hostile in four directories
/// (renames reported in walk order, a `~1` for a name taken in the same
/// directory).
#[test]
fn extract_is_the_same_whatever_the_threads_or_kernel_copy() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut cases: Vec<(std::path::PathBuf, Vec<&str>)> = Vec::new();
    for image in images() {
        let img = work.path().join(&image);
        gunzip(&dir().join(format!("{image}.gz")), &img);
        cases.push((img, Vec::new()));
    }
    // A file system inside a container (VMDK, MBR) too.
    let containers = tsv_rows(&dir().join("containers.tsv"));
    if let Some(r) = containers.first() {
        let img = work.path().join(r[0].trim_end_matches(".gz"));
        gunzip(&dir().join(&r[0]), &img);
        cases.push((img, vec!["-V", &r[1]]));
    }
    // Hostile names in four directories of the ext2 fixture.
    let mut bytes = crate::common::gunzip_bytes(&dir().join("ext2.img.gz"));
    for (from, to) in [
        (&b"\x02\x02d3"[..], &b"\x02\x02d\\"[..]),
        (b"\x08\x01deep.txt", b"\x08\x01deep\\txt"),
        (b"\x0e\x01entry_0501.txt", b"\x0e\x01entry\\0500.txt"),
        (b"\x08\x01case.txt", b"\x08\x01case\\txt"),
    ] {
        let at = find(&bytes, from);
        bytes[at..at + to.len()].copy_from_slice(to);
    }
    let hostile = work.path().join("hostile-ext2.img");
    std::fs::write(&hostile, &bytes).expect("write");
    cases.push((hostile, Vec::new()));

    let mut last = None;
    for (img, extra) in &cases {
        let mut runs = Vec::new();
        for (i, how) in [
            &["--threads", "1", "--no-kernel-copy"][..],
            &["--threads", "1"],
            &["--threads", "3"],
        ]
        .iter()
        .enumerate()
        {
            let out_dir = work.path().join(format!("out-{i}"));
            let _ = std::fs::remove_dir_all(&out_dir);
            let mut args = vec![
                "extract",
                "--streams",
                "-o",
                out_dir.to_str().unwrap_or_default(),
                img.to_str().unwrap_or_default(),
            ];
            args.extend(*how);
            args.extend(extra);
            let started = std::time::SystemTime::now();
            let out = diskimage(&args);
            let stderr = String::from_utf8_lossy(&out.stderr)
                .replace(out_dir.to_str().unwrap_or_default(), "OUT");
            runs.push((out.status.code(), stderr, tree_snapshot(&out_dir, started)));
        }
        let name = img.display();
        assert!(runs[0].2.len() > 20, "{name}: {} entries", runs[0].2.len());
        for (i, run) in runs.iter().enumerate().skip(1) {
            assert_eq!(runs[0].0, run.0, "{name}: exit status of run {i}");
            assert_eq!(runs[0].1, run.1, "{name}: stderr of run {i}");
            let differ: Vec<_> = runs[0]
                .2
                .iter()
                .filter(|(k, v)| run.2.get(*k) != Some(v))
                .take(5)
                .collect();
            assert!(
                runs[0].2.len() == run.2.len() && differ.is_empty(),
                "{name}: the tree of run {i} differs: {differ:?}"
            );
        }
        last = runs.pop();
    }
    // The hostile image's report: the one-thread walk's order (a
    // directory's entries by name, then its subdirectories).
    let (_, stderr, tree) = last.expect("the hostile image ran");
    let renamed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("renamed:"))
        .collect();
    assert_eq!(
        renamed,
        [
            "renamed: /case\\txt -> OUT/case_txt",
            "renamed: /big_dir/entry\\0500.txt -> OUT/big_dir/entry_0500.txt",
            "renamed: /big_dir/entry_0500.txt -> OUT/big_dir/entry_0500.txt~1",
            "renamed: /d0/d1/d2/d\\ -> OUT/d0/d1/d2/d_",
            "renamed: /d0/d1/d2/d\\/d4/d5/d6/d7/d8/d9/d10/d11/deep\\txt \
             -> OUT/d0/d1/d2/d_/d4/d5/d6/d7/d8/d9/d10/d11/deep_txt",
        ],
        "{stderr}"
    );
    assert!(
        stderr.ends_with("extracted 1012 files, renamed 5\n"),
        "{stderr}"
    );
    assert!(tree.contains_key("big_dir/entry_0500.txt~1"));
}
