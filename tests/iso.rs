//! ISO 9660 end to end: every image of `fixtures/iso/` listed with
//! `ls -r --json` and extracted, against the source tree (`*.listing.tsv`
//! from mktree.py) and xorriso's own view (`*.lsdl.txt`: `-find / -exec
//! lsdl`), with TSK's `fls -r -p` as a further cross-check; El Torito
//! entries against `xorriso -report_el_torito`; the corpus ISO against
//! TSK (fls and icat); hostile mutations give typed errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage::formats::MemoryDevice;
use diskimage::fs::iso9660::IsoFs;
use diskimage::fs::{ErrorKind, FileSystem};

use crate::common::{dir_names, diskimage, gunzip, repo, sha256_file, tsv_rows};

fn dir() -> PathBuf {
    repo().join("fixtures/iso")
}

/// (image, names it is read with) from `expected.tsv` (image, options,
/// size, sha256, source ending in the names: rr, joliet or primary).
fn images() -> Vec<(String, String)> {
    tsv_rows(&dir().join("expected.tsv"))
        .into_iter()
        .map(|r| {
            let names = r[4].rsplit(' ').next().unwrap_or_default().to_string();
            (r[0].clone(), names)
        })
        .collect()
}

use crate::common::ListingRow as Row;

fn listing(image: &str) -> BTreeMap<String, Row> {
    crate::common::listing_tsv(&dir().join(format!("{image}.listing.tsv")))
}

/// xorriso's `lsdl` lines: path -> (type char, size).
fn lsdl(image: &str) -> BTreeMap<String, (char, u64)> {
    let text = std::fs::read_to_string(dir().join(format!("{image}.lsdl.txt"))).expect("lsdl");
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(start) = line.find(" '/") else {
            continue;
        };
        let rest = &line[start + 2..];
        let path = rest.split('\'').next().unwrap_or_default().to_string();
        let cols: Vec<&str> = line[..start].split_whitespace().collect();
        let ty = cols[0].chars().next().unwrap_or('?');
        let size = cols[4].parse().unwrap_or(0);
        if path != "/" {
            out.insert(path, (ty, size));
        }
    }
    out
}

fn ls_json(img: &Path) -> BTreeMap<String, serde_json::Value> {
    let out = diskimage(&["ls", "-r", "--json", img.to_str().unwrap_or_default()]);
    assert!(
        out.status.success(),
        "{}: ls: {}",
        img.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ls --json");
    json.as_array()
        .expect("array")
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e.clone(),
            )
        })
        .collect()
}

fn secs(v: &serde_json::Value) -> Option<i64> {
    v.as_str()
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.parse().ok())
}

fn check_image(image: &str, names: &str, work: &Path) -> Vec<String> {
    let img = work.join(image);
    gunzip(&dir().join(format!("{image}.gz")), &img);
    check_image_file(image, &img, names, work)
}

/// [`check_image`] of the file `img`, against the truth files of fixture
/// `image` (the same tree in another layout).
fn check_image_file(image: &str, img: &Path, names: &str, work: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let img = img.to_path_buf();
    let before = sha256_file(&img);
    let listed = ls_json(&img);
    let tools = lsdl(image);
    let source = listing(image);

    // Names: exactly what xorriso lists, plus the virtual [BOOT] files.
    let got: BTreeSet<&String> = listed
        .keys()
        .filter(|p| !p.starts_with("/[BOOT]"))
        .collect();
    let want: BTreeSet<&String> = tools.keys().collect();
    for p in want.difference(&got) {
        errors.push(format!("{image}: {p} (xorriso lists it) missing from ls"));
    }
    for p in got.difference(&want) {
        errors.push(format!("{image}: {p} listed but xorriso does not list it"));
    }
    for (p, (ty, size)) in &tools {
        let Some(e) = listed.get(p) else { continue };
        let ours = match *ty {
            'd' => "dir",
            'l' => "symlink",
            _ => "file",
        };
        if e["type"] != ours {
            errors.push(format!("{image}: {p}: type {} != xorriso {ty}", e["type"]));
        }
        if *ty == '-' && e["size"].as_u64() != Some(*size) {
            errors.push(format!(
                "{image}: {p}: size {} != xorriso {size}",
                e["size"]
            ));
        }
    }
    // Sizes, types, targets and mtimes against the source tree.
    for (p, row) in &source {
        let Some(e) = listed.get(p) else {
            errors.push(format!("{image}: {p} of the source tree missing from ls"));
            continue;
        };
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
        if secs(&e["modified"]) != row.mtime {
            errors.push(format!(
                "{image}: {p}: mtime {:?} != {:?}",
                secs(&e["modified"]),
                row.mtime
            ));
        }
    }
    // TSK reads the Joliet (else primary) tree, not Rock Ridge: on images
    // without Rock Ridge its names are ours.
    if names != "rr" {
        let fls = std::fs::read_to_string(dir().join(format!("{image}.fls.txt"))).expect("fls");
        for line in fls.lines() {
            let Some((_, name)) = line.split_once(":\t") else {
                continue;
            };
            if name.starts_with('$') {
                continue;
            }
            let p = format!("/{name}");
            if !listed.contains_key(&p) {
                errors.push(format!("{image}: fls lists {p}, ls does not"));
            }
        }
    }

    // extract: every file byte for byte with its mtime, links as links.
    let outdir = work.join(format!("{image}.out"));
    let out = diskimage(&[
        "extract",
        "-o",
        outdir.to_str().unwrap_or_default(),
        img.to_str().unwrap_or_default(),
    ]);
    if !out.status.success() {
        errors.push(format!(
            "{image}: extract failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for (p, row) in &source {
        let host = outdir.join(p.trim_start_matches('/'));
        match row.ty.as_str() {
            "file" => {
                if !host.is_file() || sha256_file(&host) != row.sha256 {
                    errors.push(format!("{image}: extracted {p} differs or is missing"));
                    continue;
                }
                let m = std::fs::metadata(&host).and_then(|m| m.modified()).ok();
                let s = m
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                if s != row.mtime {
                    errors.push(format!(
                        "{image}: extracted {p} mtime {s:?} != {:?}",
                        row.mtime
                    ));
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
fn every_iso_fixture_lists_and_extracts_as_its_tools_see_it() {
    let work = tempfile::tempdir().expect("tempdir");
    let images = images();
    assert!(images.len() >= 5, "fixtures missing: {images:?}");
    let mut errors = Vec::new();
    for (image, names) in &images {
        errors.extend(check_image(image, names, work.path()));
    }
    assert!(
        errors.is_empty(),
        "{} problems:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

fn open_bytes(bytes: Vec<u8>) -> diskimage::fs::Result<IsoFs> {
    IsoFs::open(Arc::new(MemoryDevice::new(bytes)))
}

fn fixture_bytes(image: &str) -> Vec<u8> {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join(image);
    gunzip(&dir().join(format!("{image}.gz")), &img);
    std::fs::read(&img).expect("image")
}

#[test]
fn el_torito_entries_match_xorriso() {
    let text = std::fs::read_to_string(dir().join("eltorito.iso.eltorito.txt")).expect("report");
    // "El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4          34"
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 1, "{text}");
    let fs = open_bytes(fixture_bytes("eltorito.iso")).expect("open");
    let entries = fs.boot_entries();
    assert_eq!(entries.len(), rows.len());
    for (e, r) in entries.iter().zip(&rows) {
        assert_eq!(e.platform_name(), r[1]);
        assert_eq!(e.bootable, r[2] == "y");
        assert_eq!(e.emulation_name(), r[3]);
        assert_eq!(format!("{:#06x}", e.load_segment), r[4]);
        assert_eq!(e.sector_count.to_string(), r[6]);
        assert_eq!(e.lba.to_string(), r[7]);
    }
    // The virtual [BOOT] file is the loaded part of the boot image.
    let names: Vec<String> = dir_names(&fs, "/[BOOT]");
    assert_eq!(names, vec!["1-BIOS-none.img".to_string()]);
    let mut boot = Vec::new();
    std::io::Read::read_to_end(
        &mut fs.open("/[BOOT]/1-BIOS-none.img").expect("open"),
        &mut boot,
    )
    .expect("read");
    let mut whole = Vec::new();
    std::io::Read::read_to_end(&mut fs.open("/boot/boot.img").expect("open"), &mut whole)
        .expect("read");
    assert_eq!(boot.len(), 4 * 512);
    assert_eq!(&whole[..boot.len()], &boot[..]);
}

#[test]
fn timeline_of_rock_ridge_iso_has_the_source_names_and_times() {
    let work = tempfile::tempdir().expect("tempdir");
    let img = work.path().join("rr_joliet.iso");
    gunzip(&dir().join("rr_joliet.iso.gz"), &img);
    let out = diskimage(&["timeline", img.to_str().unwrap_or_default()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let expected = listing("rr_joliet.iso");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 11, "bodyfile line {line}");
        let name = f[1].split(" -> ").next().unwrap_or_default().to_string();
        if let Some(row) = expected.get(&name) {
            if row.ty == "file" {
                assert_eq!(f[6], row.size.to_string(), "{line}");
            }
            assert_eq!(f[8].parse::<i64>().ok(), row.mtime, "{line}");
        }
        names.insert(name);
    }
    let want: BTreeSet<String> = expected.keys().cloned().collect();
    assert!(
        want.is_subset(&names),
        "missing {:?}",
        want.difference(&names).collect::<Vec<_>>()
    );
}

#[test]
fn rock_ridge_metadata_and_primary_case_rules() {
    let fs = open_bytes(fixture_bytes("rr_joliet.iso")).expect("open");
    assert!(fs.case_sensitive());
    assert_eq!(fs.label().as_deref(), Some("ISOFIX"));
    let m = fs.metadata("/small.txt").expect("small");
    assert_eq!(m.mode, Some(0o100644));
    assert_eq!(
        (m.uid, m.gid),
        (Some(0), Some(0)),
        "as xorriso's lsdl shows"
    );
    // isoinfo -R -l: link count 2, one extent for both names.
    assert_eq!(m.nlink, Some(2));
    let h = fs.metadata("/hard_link.txt").expect("hard link");
    // No PX serial number here: inodes are the directory-record offsets.
    assert_eq!(h.nlink, m.nlink);
    assert_ne!(h.inode, m.inode);
    assert_eq!(fs.read_link("/link_fast").expect("link"), "small.txt");
    assert_eq!(
        fs.metadata("/SMALL.TXT").map_err(|e| e.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    // Primary names: exact, then ASCII case-insensitive.
    let plain = open_bytes(fixture_bytes("plain.iso")).expect("open");
    assert!(!plain.case_sensitive());
    assert_eq!(
        plain.metadata("/subdir/file_1.txt").expect("any case").size,
        2
    );
    assert_eq!(plain.metadata("/EMPTY").expect("no dot").size, 0);
}

#[test]
fn corpus_iso9660_raw_lists_and_reads_as_tsk() {
    let Some(corpus) = crate::corpus::corpus_dir() else {
        return;
    };
    let unpacked = crate::corpus::Unpacked::new(corpus);
    let path = unpacked.path("dfvfs/iso9660.raw");
    let listed = ls_json(&path);
    let fls = std::fs::read_to_string(dir().join("corpus-iso9660.raw.fls.txt")).expect("fls");
    let want: BTreeSet<String> = fls
        .lines()
        .filter_map(|l| l.split_once(":\t"))
        .map(|(_, n)| format!("/{n}"))
        .filter(|p| !p.starts_with("/$"))
        .collect();
    let got: BTreeSet<String> = listed.keys().cloned().collect();
    assert_eq!(got, want);
    for r in tsv_rows(&dir().join("corpus-iso9660.raw.icat.tsv")) {
        let out = diskimage(&["cat", path.to_str().unwrap_or_default(), &r[1]]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len().to_string(), r[2], "{}", r[1]);
        assert_eq!(crate::common::hex(&sha2_256(&out.stdout)), r[3], "{}", r[1]);
    }
}

fn sha2_256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("pattern {needle:?} not found"))
}

fn put_both32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    b[at + 4..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// The kind of the first error met walking the whole tree and reading every file.
fn walk_error(fs: &IsoFs) -> Option<(ErrorKind, String)> {
    let mut stack = vec!["/".to_string()];
    let mut seen = 0;
    while let Some(d) = stack.pop() {
        let entries = match fs.read_dir(&d) {
            Ok(e) => e,
            Err(e) => return Some((e.kind(), e.to_string())),
        };
        for e in entries {
            seen += 1;
            assert!(seen < 10_000, "walk does not end");
            let p = diskimage::fs::file_system::join(&d, &e.name);
            match fs.metadata(&p) {
                Ok(m) if m.file_type == diskimage::fs::FileType::Directory => stack.push(p),
                Ok(m) if m.file_type == diskimage::fs::FileType::File => {
                    let r = fs.open(&p).and_then(|mut r| {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(&mut r, &mut v).map_err(|e| {
                            diskimage::fs::Error::from_io(diskimage::fs::FsName::Iso9660, &p, e)
                        })
                    });
                    if let Err(e) = r {
                        return Some((e.kind(), e.to_string()));
                    }
                }
                Ok(_) => {}
                Err(e) => return Some((e.kind(), e.to_string())),
            }
        }
    }
    None
}

#[test]
fn hostile_isos_give_typed_errors() {
    let plain = fixture_bytes("plain.iso");
    let rr = fixture_bytes("rr_joliet.iso");
    assert!(walk_error(&open_bytes(plain.clone()).expect("open")).is_none());

    // A directory record pointing to an ancestor (DEEPER -> the root).
    let mut b = plain.clone();
    let root_lba = u32::from_le_bytes(b[0x8000 + 156 + 2..0x8000 + 156 + 6].try_into().unwrap());
    let rec = find(&b, b"\x06DEEPER") - 32;
    put_both32(&mut b, rec + 2, root_lba);
    let (kind, msg) = walk_error(&open_bytes(b).expect("open")).expect("an error");
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains("loop") && msg.contains(" at 0x"), "{msg}");

    // An extent past the end of the image.
    let mut b = plain.clone();
    let rec = find(&b, b"\x0aDATA.BIN;1") - 32;
    put_both32(&mut b, rec + 2, 0x00FF_FFFF);
    let fs = open_bytes(b).expect("open");
    let e = fs.open("/DATA.BIN").err().expect("an error");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains(&format!("at {rec:#x}")), "{e}");

    // A PVD block size of zero and an absurd one.
    for bs in [0u16, 3000] {
        let mut b = plain.clone();
        b[0x8080..0x8082].copy_from_slice(&bs.to_le_bytes());
        b[0x8082..0x8084].copy_from_slice(&bs.to_be_bytes());
        let e = open_bytes(b).err().expect("an error");
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("at 0x8080"), "{e}");
    }

    // A root directory of 2^32 - 1 bytes.
    let mut b = plain.clone();
    put_both32(&mut b, 0x8000 + 156 + 10, u32::MAX);
    let e = open_bytes(b).err().expect("an error");
    assert!(
        matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::LimitExceeded),
        "{e}"
    );

    // An NM entry whose length overflows the system use area.
    let mut b = rr.clone();
    let nm = find(&b, b"NM\x0e\x01\x00small.txt");
    b[nm + 2] = 0xF0;
    let (kind, msg) = walk_error(&open_bytes(b).expect("open")).expect("an error");
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");
    assert!(msg.contains("overflows"), "{msg}");

    // An SL entry whose component overflows its entry.
    let mut b = rr.clone();
    let sl = find(&b, b"SL\x10\x01\x00\x00\x09small.txt");
    b[sl + 6] = 0x40;
    let (kind, msg) = walk_error(&open_bytes(b).expect("open")).expect("an error");
    assert_eq!(kind, ErrorKind::Corrupt, "{msg}");

    // A continuation area that points at itself.
    let mut b = rr.clone();
    let ce = find(&b, b"CE\x1c\x01");
    put_both32(&mut b, ce + 4, (ce / 2048) as u32);
    put_both32(&mut b, ce + 12, (ce % 2048) as u32);
    put_both32(&mut b, ce + 20, 28);
    let e = open_bytes(b.clone())
        .err()
        .or_else(|| {
            walk_error(&open_bytes(b).expect("open")).map(|(k, m)| {
                assert_eq!(k, ErrorKind::Corrupt, "{m}");
                diskimage::fs::Error::corrupt(diskimage::fs::FsName::Iso9660, None, m)
            })
        })
        .expect("an error");
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("continuation"), "{e}");

    // Truncated images: errors, never a panic.
    for cut in [0x8000, 0x9000, rr.len() / 3, rr.len() / 2] {
        if let Ok(fs) = open_bytes(rr[..cut].to_vec()) {
            let _ = walk_error(&fs);
        }
    }
}

#[test]
fn multi_extent_records_are_concatenated() {
    // xorriso only splits files of 4 GiB and more; here the root directory
    // of plain.iso is rewritten so that DATA.BIN is two records of one name
    // (the first with the multi-extent flag), as ECMA-119 9.1.6 lays them
    // out. The truth stays the source tree's sha256 of DATA.BIN.
    let mut b = fixture_bytes("plain.iso");
    let root = 0x8000 + 156;
    let lba = u32::from_le_bytes(b[root + 2..root + 6].try_into().unwrap()) as usize;
    let dir = lba * 2048;
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut pos = dir;
    while b[pos] != 0 {
        let len = usize::from(b[pos]);
        records.push(b[pos..pos + len].to_vec());
        pos += len;
    }
    let i = records
        .iter()
        .position(|r| &r[33..33 + usize::from(r[32])] == b"DATA.BIN;1")
        .expect("DATA.BIN record");
    let size = u32::from_le_bytes(records[i][10..14].try_into().unwrap());
    let start = u32::from_le_bytes(records[i][2..6].try_into().unwrap());
    let (first, rest) = (25 * 2048u32, size - 25 * 2048);
    let mut a = records[i].clone();
    put_both32(&mut a, 10, first);
    a[25] |= 0x80;
    let mut c = records[i].clone();
    put_both32(&mut c, 2, start + 25);
    put_both32(&mut c, 10, rest);
    records.splice(i..=i, [a, c]);
    let bytes: Vec<u8> = records.concat();
    assert!(bytes.len() <= 2048);
    b[dir..dir + 2048].fill(0);
    b[dir..dir + bytes.len()].copy_from_slice(&bytes);

    let fs = open_bytes(b).expect("open");
    let names: Vec<String> = dir_names(&fs, "/");
    assert_eq!(
        names.iter().filter(|n| *n == "DATA.BIN").count(),
        1,
        "{names:?}"
    );
    assert_eq!(
        fs.metadata("/DATA.BIN").expect("meta").size,
        u64::from(size)
    );
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut fs.open("/DATA.BIN").expect("open"), &mut data).expect("read");
    let want = &listing("plain.iso")["/DATA.BIN"].sha256;
    assert_eq!(&crate::common::hex(&sha2_256(&data)), want);
    // A read that starts in the first extent and a seek into the second.
    let mut r = fs.open("/DATA.BIN").expect("open");
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(u64::from(first) + 7)).expect("seek");
    let mut ten = [0u8; 10];
    std::io::Read::read_exact(&mut r, &mut ten).expect("read");
    assert_eq!(&ten[..], &data[first as usize + 7..first as usize + 17]);
}

#[test]
fn zisofs_files_read_decompressed() {
    // zisofs.iso: xorriso's --zisofs filter; isoinfo shows the stored
    // (compressed) sizes, the source tree the real ones.
    let fs = open_bytes(fixture_bytes("zisofs.iso")).expect("open");
    let isoinfo = std::fs::read_to_string(dir().join("zisofs.iso.isoinfo.txt")).expect("isoinfo");
    let mut compressed = 0;
    for (p, row) in listing("zisofs.iso").iter().filter(|(_, r)| r.ty == "file") {
        let name = p.rsplit('/').next().unwrap_or_default();
        let stored: u64 = isoinfo
            .lines()
            .find(|l| l.trim_end().ends_with(&format!(" {name}")))
            .and_then(|l| l.split_whitespace().nth(4))
            .and_then(|s| s.parse().ok())
            .expect("isoinfo row");
        let m = fs.metadata(p).expect("meta");
        assert_eq!(m.size, row.size, "{p}");
        if stored < row.size {
            compressed += 1;
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut fs.open(p).expect("open"), &mut data).expect("read");
        assert_eq!(crate::common::hex(&sha2_256(&data)), row.sha256, "{p}");
    }
    assert!(
        compressed >= 2,
        "text.txt and zeros.bin are stored compressed"
    );
}

#[test]
fn a_real_multi_extent_file_over_4_gib_reads_as_its_source() {
    // xorriso -iso-level 3 wrote big.bin (4 GiB + 3 MiB + 123 bytes) as two
    // extent records (large.iso.isoinfo.txt); the 4 GiB image is a
    // streamOptimized VMDK made by qemu-img. Truth: sha256 of byte windows
    // of the source file straddling each extent boundary
    // (large.windows.tsv, from dd and Python) and xorriso's sizes.
    use std::io::{Read, Seek, SeekFrom};
    let isoinfo = std::fs::read_to_string(dir().join("large.iso.isoinfo.txt")).expect("isoinfo");
    assert_eq!(isoinfo.matches("big.bin").count(), 2, "two extent records");
    let img = diskimage::formats::open(
        &dir().join("large.iso.vmdk"),
        &diskimage::formats::OpenOptions::default(),
    )
    .expect("open the vmdk");
    let fs = IsoFs::open(img.device()).expect("iso on the vmdk");
    let sizes = lsdl("large.iso");
    let mut whole = BTreeMap::new();
    for row in tsv_rows(&dir().join("large.windows.tsv")) {
        let (path, len, sum) = (&row[0], row[2].parse::<u64>().expect("len"), &row[3]);
        if row[1] == "-" {
            let meta = fs.metadata(path).expect("metadata");
            assert_eq!(meta.size, len, "{path}: size");
            assert_eq!(
                sizes.get(path.as_str()).map(|s| s.1),
                Some(len),
                "{path}: xorriso size"
            );
            whole.insert(path.clone(), sum.clone());
            continue;
        }
        let offset: u64 = row[1].parse().expect("offset");
        let mut f = fs.open(path).expect("open");
        f.seek(SeekFrom::Start(offset)).expect("seek");
        let mut buf = vec![0u8; usize::try_from(len).expect("len")];
        f.read_exact(&mut buf).expect("window");
        assert_eq!(
            crate::common::hex(&sha2_256(&buf)),
            *sum,
            "{path} bytes {offset}+{len}"
        );
    }
    // The small file whole. big.bin's whole-file sha256 (in the truth file)
    // is not hashed here: 4 GiB through a debug build takes minutes; the
    // windows straddle the extent boundary and the 4 GiB line, and cover
    // the first and last bytes.
    let mut small = Vec::new();
    fs.open("/small.txt")
        .expect("small")
        .read_to_end(&mut small)
        .expect("read");
    assert_eq!(crate::common::hex(&sha2_256(&small)), whole["/small.txt"]);
    // Reading past the end gives nothing, not an error or a panic.
    let mut f = fs.open("/sub/big.bin").expect("open");
    f.seek(SeekFrom::Start(whole_len(&fs)))
        .expect("seek to end");
    assert_eq!(f.read(&mut [0u8; 16]).expect("read at end"), 0);
}

fn whole_len(fs: &IsoFs) -> u64 {
    fs.metadata("/sub/big.bin").expect("metadata").size
}

/// Rewrites an image written with 2048-byte logical blocks to `bs`-byte
/// blocks: the same bytes at the same places, every block number (volume
/// size, path tables, every directory record's extent) multiplied by
/// 2048 / `bs`, as ECMA-119 allows (6.2.2: a logical block of 512, 1024 or
/// 2048 bytes; directory records still never cross a 2048-byte sector).
fn rescale_blocks(b: &mut [u8], bs: u32) {
    fn rescale_dir(b: &mut [u8], lba: u32, len: u32, f: u32, seen: &mut BTreeSet<u32>) {
        if !seen.insert(lba) {
            return;
        }
        let (start, end) = (lba as usize * 2048, lba as usize * 2048 + len as usize);
        let mut pos = start;
        let mut subdirs = Vec::new();
        while pos < end {
            let n = usize::from(b[pos]);
            if n == 0 {
                pos = (pos / 2048 + 1) * 2048; // records never cross a sector
                continue;
            }
            let extent = u32::from_le_bytes(b[pos + 2..pos + 6].try_into().unwrap());
            let size = u32::from_le_bytes(b[pos + 10..pos + 14].try_into().unwrap());
            let name_len = usize::from(b[pos + 32]);
            let special = name_len == 1 && b[pos + 33] <= 1;
            if b[pos + 25] & 2 != 0 && !special {
                subdirs.push((extent, size));
            }
            put_both32(b, pos + 2, extent * f);
            pos += n;
        }
        for (lba, size) in subdirs {
            rescale_dir(b, lba, size, f, seen);
        }
    }
    let f = 2048 / bs;
    let pvd = 0x8000;
    assert_eq!(
        &b[pvd..pvd + 6],
        b"\x01CD001",
        "a primary volume descriptor"
    );
    let space = u32::from_le_bytes(b[pvd + 80..pvd + 84].try_into().unwrap());
    put_both32(b, pvd + 80, space * f);
    b[pvd + 128..pvd + 130].copy_from_slice(&(bs as u16).to_le_bytes());
    b[pvd + 130..pvd + 132].copy_from_slice(&(bs as u16).to_be_bytes());
    for (at, big) in [(140, false), (144, false), (148, true), (152, true)] {
        let raw: [u8; 4] = b[pvd + at..pvd + at + 4].try_into().unwrap();
        let v = if big {
            u32::from_be_bytes(raw)
        } else {
            u32::from_le_bytes(raw)
        };
        let v = if v == 0 { 0 } else { v * f };
        let out = if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        b[pvd + at..pvd + at + 4].copy_from_slice(&out);
    }
    let root = pvd + 156;
    let lba = u32::from_le_bytes(b[root + 2..root + 6].try_into().unwrap());
    let len = u32::from_le_bytes(b[root + 10..root + 14].try_into().unwrap());
    put_both32(b, root + 2, lba * f);
    rescale_dir(b, lba, len, f, &mut BTreeSet::new());
}

#[test]
fn logical_blocks_of_512_and_1024_bytes_read_like_2048() {
    // xorriso only writes 2048-byte logical blocks: plain.iso (primary
    // names only, no path-table reader involved) is rewritten to 1024- and
    // 512-byte blocks and must still list and extract as its source tree,
    // xorriso and TSK saw it.
    for bs in [1024u32, 512] {
        let work = tempfile::tempdir().expect("tempdir");
        let mut b = fixture_bytes("plain.iso");
        rescale_blocks(&mut b, bs);
        let img = work.path().join(format!("plain-{bs}.iso"));
        std::fs::write(&img, &b).expect("write");
        let fs = open_bytes(b).expect("open");
        let errors = check_image_file("plain.iso", &img, "primary", work.path());
        assert!(
            errors.is_empty(),
            "{bs}-byte blocks:\n{}",
            errors.join("\n")
        );
        assert!(fs.read_dir("/").expect("root").len() > 1);
    }
}
