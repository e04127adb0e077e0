//! Detection against blkid: type, label and UUID of every image of
//! `fixtures/detect/` (made by `fixtures/detect/make.sh`) and of
//! `fixtures/filesystems/`, as `blkid -p` printed them when the fixtures
//! were made (`fixtures/detect/blkid.tsv`); the 2,804-cluster FAT32 read
//! against fsck.fat's, TSK's and icat's view; an ext3 journal device and a
//! LUKS volume over an old swap signature.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::{detect, open_fs, ErrorKind as FsErrorKind, FileSystem, FileType, FsKind};
use diskimage::BlockDevice;

use crate::common::{diskimage, gunzip, gunzip_bytes, repo, sha256_bytes, tsv_rows};

fn fixtures() -> std::path::PathBuf {
    repo().join("fixtures")
}

/// The device of a committed image (`detect/jdev.img` ...).
fn device(name: &str) -> Arc<dyn BlockDevice> {
    Arc::new(MemoryDevice::new(gunzip_bytes(
        &fixtures().join(format!("{name}.gz")),
    )))
}

/// Our kind name for blkid's TYPE and VERSION.
fn kind_of(ty: &str, version: &str) -> String {
    match (ty, version) {
        ("vfat", v) => v.to_lowercase(),
        ("crypto_LUKS", _) => "luks".into(),
        (t, _) => t.into(),
    }
}

fn opt(s: &str) -> Option<String> {
    (s != "-").then(|| s.to_string())
}

#[test]
fn detection_matches_blkid() {
    let rows = tsv_rows(&fixtures().join("detect/blkid.tsv"));
    assert!(rows.len() >= 17, "blkid.tsv: {} rows", rows.len());
    let mut problems = Vec::new();
    for r in rows {
        let [name, ty, version, label, _boot_label, uuid] = &r[..] else {
            panic!("malformed blkid.tsv row {r:?}");
        };
        let dev = device(name);
        let Some(info) = detect(dev.as_ref()).unwrap_or_else(|e| panic!("{name}: {e}")) else {
            problems.push(format!("{name}: nothing detected, blkid says {ty}"));
            continue;
        };
        let got = (
            info.kind.as_str().to_string(),
            info.label.clone(),
            info.uuid.clone(),
        );
        let want = (kind_of(ty, version), opt(label), opt(uuid));
        if got != want {
            problems.push(format!("{name}: detected {got:?}, blkid {want:?}"));
        }
        // The FAT, exFAT and NTFS readers name the volume as detection does.
        if matches!(
            info.kind,
            FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 | FsKind::ExFat | FsKind::Ntfs
        ) {
            match open_fs(dev) {
                Ok(fs) if fs.label() == opt(label) => {}
                Ok(fs) => problems.push(format!(
                    "{name}: reader label {:?}, blkid {label}",
                    fs.label()
                )),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn volumes_lists_labels_as_blkid_does() {
    let work = tempfile::tempdir().expect("tempdir");
    let mut problems = Vec::new();
    for r in tsv_rows(&fixtures().join("detect/blkid.tsv")) {
        let [name, ty, version, label, _, uuid] = &r[..] else {
            panic!("malformed row {r:?}");
        };
        let img = work.path().join(name.replace('/', "_"));
        gunzip(&fixtures().join(format!("{name}.gz")), &img);
        let out = diskimage(&["volumes", "--json", img.to_str().expect("utf-8")]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let fs = &json["volumes"][0]["fs"];
        let got = (
            fs["kind"].as_str().map(str::to_string),
            fs["label"].as_str().map(str::to_string),
            fs["uuid"].as_str().map(str::to_string),
        );
        let want = (Some(kind_of(ty, version)), opt(label), opt(uuid));
        if got != want {
            problems.push(format!("{name}: volumes says {got:?}, blkid {want:?}"));
        }
        let mountable = json["volumes"][0]["mountable"].as_bool();
        let readable = !matches!(ty.as_str(), "jbd" | "crypto_LUKS");
        if mountable != Some(readable) {
            problems.push(format!("{name}: mountable {mountable:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every path of `fs` under `dir` with its type, recursively.
fn walk(fs: &dyn FileSystem, dir: &str, out: &mut BTreeSet<(String, bool)>) {
    for e in fs.read_dir(dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = format!("{}/{}", dir.trim_end_matches('/'), e.name);
        let is_dir = e.file_type == FileType::Directory;
        out.insert((path.clone(), is_dir));
        if is_dir {
            walk(fs, &path, out);
        }
    }
}

#[test]
fn fat32_with_few_clusters_reads_as_fat32() {
    let dev = device("detect/fat32_small.img");
    let fsck =
        std::fs::read_to_string(fixtures().join("detect/fat32_small.img.fsck.txt")).expect("fsck");
    assert!(
        fsck.contains("2804 data clusters") && fsck.contains("32 bit entries"),
        "{fsck}"
    );
    let fs = open_fs(dev).unwrap_or_else(|e| panic!("fat32_small: {e}"));
    assert_eq!(fs.kind(), FsKind::Fat32);
    // The names TSK lists (fls -f fat32 -r -p), less its virtual entries
    // and the label entry.
    let fls =
        std::fs::read_to_string(fixtures().join("detect/fat32_small.img.fls.txt")).expect("fls");
    let want: BTreeSet<(String, bool)> = fls
        .lines()
        .filter_map(|l| {
            let (meta, path) = l.split_once('\t')?;
            let real = meta.starts_with("r/r") || meta.starts_with("d/d");
            (real && !path.ends_with("(Volume Label Entry)"))
                .then(|| (format!("/{path}"), meta.starts_with("d/d")))
        })
        .collect();
    let mut got = BTreeSet::new();
    walk(fs.as_ref(), "/", &mut got);
    assert_eq!(got, want);
    // Every file's bytes as icat gives them (DATA.BIN's chain is fragmented).
    for r in tsv_rows(&fixtures().join("detect/fat32_small.img.icat.tsv")) {
        let mut data = Vec::new();
        fs.open(&r[0])
            .unwrap_or_else(|e| panic!("{}: {e}", r[0]))
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("{}: {e}", r[0]));
        assert_eq!(
            (data.len().to_string(), sha256_bytes(&data)),
            (r[1].clone(), r[2].clone()),
            "{}",
            r[0]
        );
    }
}

#[test]
fn fat32_with_few_clusters_through_the_cli() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("fat32_small.img");
    gunzip(&fixtures().join("detect/fat32_small.img.gz"), &img);
    let out = diskimage(&["cat", img.to_str().expect("utf-8"), "/sub/note.txt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let icat = tsv_rows(&fixtures().join("detect/fat32_small.img.icat.tsv"));
    let note = icat
        .iter()
        .find(|r| r[0] == "/SUB/NOTE.TXT")
        .expect("icat row");
    assert_eq!(sha256_bytes(&out.stdout), note[2]);
}

#[test]
fn journal_device_is_detected_and_not_opened() {
    let dev = device("detect/jdev.img");
    let info = detect(dev.as_ref()).expect("detect").expect("something");
    assert_eq!(info.kind, FsKind::Jbd);
    let e = open_fs(dev).err().expect("a journal device does not open");
    assert_eq!(e.kind(), FsErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("journal"), "{e}");
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("jdev.img");
    gunzip(&fixtures().join("detect/jdev.img.gz"), &img);
    let out = diskimage(&["ls", img.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("journal") || stderr.contains("jbd"),
        "{stderr}"
    );
}

#[test]
fn luks_over_an_old_swap_signature_is_luks() {
    let bytes = gunzip_bytes(&fixtures().join("detect/luks_swap.img.gz"));
    // The fixture holds both signatures, as blkid saw them.
    assert_eq!(&bytes[4086..4096], b"SWAPSPACE2");
    let info = detect(&MemoryDevice::new(bytes))
        .expect("detect")
        .expect("something");
    assert_eq!(info.kind, FsKind::Luks);
}
