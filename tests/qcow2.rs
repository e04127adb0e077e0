//! QCOW2 images made by qemu-img/qemu-io (`fixtures/qcow2/make.sh`):
//! whole-disk reads against `qemu-img convert -O raw`, maps against
//! `qemu-img map --output=json`, and one-field changes of those images
//! that must give one exact typed error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diskimage::formats::{open_in_memory, MemoryFiles};
use diskimage::{open, BlockDevice, ErrorKind, Extent, ExtentKind, OpenOptions};

use crate::common::{gunzip_bytes, gunzip_dir, parse_options, sha256_device, tsv_rows};

fn topic() -> PathBuf {
    crate::common::repo().join("fixtures/qcow2")
}

/// One line of `qemu-img map --output=json` as the kind this library reports.
fn qemu_kind(line: &str) -> Option<(u64, u64, ExtentKind)> {
    let field = |name: &str| -> Option<&str> {
        let at = line.find(&format!("\"{name}\": "))? + name.len() + 4;
        let rest = line.get(at..)?;
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest.get(..end).map(str::trim)
    };
    let start = field("start")?.parse().ok()?;
    let length = field("length")?.parse().ok()?;
    let depth: u32 = field("depth")?.parse().ok()?;
    let kind = if field("present")? == "false" {
        ExtentKind::Unallocated
    } else if field("data")? == "true" {
        match (depth, field("compressed") == Some("true")) {
            (0, true) => ExtentKind::Compressed,
            (0, false) => ExtentKind::Data,
            (d, _) => ExtentKind::Parent { depth: d },
        }
    } else {
        ExtentKind::Zero
    };
    Some((start, length, kind))
}

fn merged(runs: impl IntoIterator<Item = (u64, u64, ExtentKind)>) -> Vec<(u64, u64, ExtentKind)> {
    let mut out: Vec<(u64, u64, ExtentKind)> = Vec::new();
    for (o, l, k) in runs {
        match out.last_mut() {
            Some(last) if last.2 == k && last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l, k)),
        }
    }
    out
}

#[test]
fn whole_disk_reads_match_qemu_img_convert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    gunzip_dir(&topic(), tmp.path());
    let rows = tsv_rows(&topic().join("expected.tsv"));
    assert!(rows.len() >= 15, "expected.tsv has {} rows", rows.len());
    for row in rows {
        let [image, opts, size, sha, ..] = row.as_slice() else {
            panic!("malformed row {row:?}")
        };
        let img = open(&tmp.path().join(image), &parse_options(opts))
            .unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(img.size().to_string(), *size, "{image}");
        let got = sha256_device(&img, img.size()).unwrap_or_else(|e| panic!("{image}: {e}"));
        assert_eq!(
            &got, sha,
            "{image} ({opts}) reads differently from qemu-img convert"
        );
    }
}

#[test]
fn maps_match_qemu_img_map() {
    let tmp = tempfile::tempdir().expect("tempdir");
    gunzip_dir(&topic(), tmp.path());
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(topic())
        .expect("topic")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".map.json"))
        .collect();
    entries.sort();
    for json in entries {
        let name = json
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".map.json"))
            .expect("name")
            .to_owned();
        let text = std::fs::read_to_string(&json).expect("map json");
        let theirs = merged(text.lines().map(|l| {
            qemu_kind(l).unwrap_or_else(|| panic!("{name}: unparsed qemu-img map line {l}"))
        }));
        let img = open(&tmp.path().join(&name), &OpenOptions::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = merged(
            img.map(0, img.size())
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .into_iter()
                .map(|e: Extent| (e.offset, e.len, e.kind)),
        );
        assert_eq!(ours, theirs, "{name}: our map differs from qemu-img map");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} maps compared");
}

#[test]
fn snapshots_are_listed_as_qemu_img_lists_them() {
    let bytes = gunzip_bytes(&topic().join("snapshots.qcow2.gz"));
    let img = mem_open(bytes, &OpenOptions::default()).expect("open");
    let props = &img.info().properties;
    let get = |k: &str| {
        props
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    // make.sh: `qemu-img snapshot -c first`, then `-c second` (IDs 1 and 2).
    assert_eq!(get("snapshots"), Some("2"));
    assert_eq!(get("snapshot.0.id"), Some("1"));
    assert_eq!(get("snapshot.0.name"), Some("first"));
    assert_eq!(get("snapshot.1.name"), Some("second"));
    assert_eq!(get("snapshot.1.size"), Some("4194304"));
}

const NAME: &str = "t.qcow2";

fn mem_open(
    bytes: Vec<u8>,
    options: &OpenOptions,
) -> diskimage::formats::Result<diskimage::DiskImage> {
    let mut files = MemoryFiles::new();
    files.insert(PathBuf::from(NAME), Arc::from(bytes));
    open_in_memory(Path::new(NAME), &files, options)
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Opens the changed image and reads all of it: the first error.
fn first_error(bytes: Vec<u8>, options: &OpenOptions) -> diskimage::formats::Error {
    let img = match mem_open(bytes, options) {
        Err(e) => return e,
        Ok(img) => img,
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < img.size() {
        let n = (img.size() - off).min(buf.len() as u64) as usize;
        if let Err(e) = img.read_at(&mut buf[..n], off) {
            return e;
        }
        off += n as u64;
    }
    panic!("the changed image opened and read without error")
}

/// Where v3.qcow2's first L2 table is, and its entry for the 1 MiB
/// cluster (`write -P 0x61 1m 300k`, 64 KiB clusters).
fn v3_tables() -> (Vec<u8>, usize, usize) {
    let b = gunzip_bytes(&topic().join("v3.qcow2.gz"));
    let l1 = be64(&b, 40) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    (b, l1, l2 + 16 * 8)
}

#[test]
fn one_field_changes_give_typed_errors() {
    let opts = OpenOptions::default();
    let (base, l1, entry) = v3_tables();
    let len = base.len() as u64;
    let check = |what: &str, e: diskimage::formats::Error, kind: ErrorKind, text: &str| {
        assert_eq!(e.kind(), kind, "{what}: {e}");
        assert!(e.to_string().contains(text), "{what}: {e}");
        assert_eq!(e.path(), Some(Path::new(NAME)), "{what}: {e}");
    };

    // L1 entry pointing past the end of the file.
    let mut b = base.clone();
    put64(
        &mut b,
        l1,
        ((len.div_ceil(0x10000) + 1) * 0x10000) | (1 << 63),
    );
    check(
        "L2 past EOF",
        first_error(b, &opts),
        ErrorKind::OutOfBounds,
        "read of 65536 bytes",
    );
    // L2 entry pointing past the end of the file.
    let mut b = base.clone();
    put64(
        &mut b,
        entry,
        ((len.div_ceil(0x10000) + 4) * 0x10000) | (1 << 63),
    );
    let e = first_error(b, &opts);
    check("data past EOF", e, ErrorKind::OutOfBounds, "read of");
    // L2 entry not aligned to a cluster.
    let mut b = base.clone();
    put64(&mut b, entry, 0x10200 | (1 << 63));
    let e = first_error(b, &opts);
    check(
        "unaligned data",
        e,
        ErrorKind::Corrupt,
        "L2 entry (cluster offset) is 66048",
    );
    // L1 entry not aligned to a cluster.
    let mut b = base.clone();
    put64(&mut b, l1, 0x30200 | (1 << 63));
    check(
        "unaligned L2",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "L2 table offset) is 197120",
    );
    // A virtual size of 2^60: a limit error, before any allocation.
    let mut b = base.clone();
    put64(&mut b, 24, 1 << 60);
    check(
        "2^60 size",
        first_error(b, &opts),
        ErrorKind::LimitExceeded,
        "L1 entries is 2147483648",
    );
    // An L1 table of 2^32-1 entries.
    let mut b = base.clone();
    put32(&mut b, 36, u32::MAX);
    check(
        "huge l1_size",
        first_error(b, &opts),
        ErrorKind::LimitExceeded,
        "l1_size is 4294967295",
    );
    // An L1 table smaller than the virtual size needs.
    let mut b = base.clone();
    put64(&mut b, 24, 1 << 40);
    check(
        "small l1_size",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "l1_size is 1, expected at least 2048",
    );
    // The L1 table past the end of the file.
    let mut b = base.clone();
    put64(&mut b, 40, len.div_ceil(0x10000) * 0x10000);
    check(
        "L1 past EOF",
        first_error(b, &opts),
        ErrorKind::OutOfBounds,
        "read of 8 bytes",
    );
    // A memory budget smaller than the L1 table of a 1 TiB disk.
    let mut b = base.clone();
    put64(&mut b, 24, 1 << 40);
    put32(&mut b, 36, 2048);
    put64(&mut b, 40, 0);
    let small = OpenOptions::new().memory_limit(Some(4096));
    check(
        "budget",
        first_error(b, &small),
        ErrorKind::LimitExceeded,
        "memory for one open image",
    );
    // Header fields.
    let mut b = base.clone();
    put32(&mut b, 100, 100);
    check(
        "header_length",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "header_length is 100",
    );
    let mut b = base.clone();
    put32(&mut b, 4, 4);
    check(
        "version",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "version is 4",
    );
    let mut b = base.clone();
    put64(&mut b, 8, 0x200);
    put32(&mut b, 16, 2000);
    check(
        "backing name",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "backing_file_size is 2000",
    );
    let mut b = base.clone();
    put32(&mut b, 32, 3);
    check(
        "crypt_method",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "crypt_method is 3",
    );
    let mut b = base.clone();
    put64(&mut b, 72, 1 << 2);
    check(
        "data file bit",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "no data file name",
    );
    let mut b = base.clone();
    put64(&mut b, 72, 1 << 4);
    put32(&mut b, 20, 12);
    check(
        "ext L2, 4 KiB",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "at least 14",
    );
    // A header extension longer than the first cluster.
    let mut b = base.clone();
    let hl = u32::from_be_bytes(b[100..104].try_into().unwrap()) as usize;
    put32(&mut b, hl, 0x4441_5441);
    put32(&mut b, hl + 4, 0x0100_0000);
    check(
        "extension",
        first_error(b, &opts),
        ErrorKind::Corrupt,
        "header extension length",
    );
    // A snapshot table past the end: a warning, an error when strict.
    let mut b = base.clone();
    put32(&mut b, 60, 3);
    put64(&mut b, 64, len + 0x10000);
    let img = mem_open(b.clone(), &opts).expect("opens with a warning");
    assert_eq!(img.info().warnings.len(), 1, "{:?}", img.info().warnings);
    let strict = OpenOptions::new().strict(true);
    check(
        "snapshots",
        first_error(b, &strict),
        ErrorKind::OutOfBounds,
        "read of 40 bytes",
    );
}

#[test]
fn damaged_compressed_and_subcluster_entries_fail_reads() {
    let opts = OpenOptions::default();
    // compressed-4k.qcow2: the first compressed cluster's stream starts with
    // a reserved deflate block type (3).
    let mut b = gunzip_bytes(&topic().join("compressed-4k.qcow2.gz"));
    let l1 = be64(&b, 40) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let e0 = be64(&b, l2);
    assert!(e0 & 1 << 62 != 0, "cluster 0 is compressed");
    let at = (e0 & ((1 << (62 - 4)) - 1)) as usize;
    b[at] = 0x07;
    let e = first_error(b, &opts);
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.offset(), Some(at as u64), "{e}");
    assert!(e.to_string().contains("does not inflate"), "{e}");
    // ext-l2.qcow2: a subcluster both allocated and zero.
    let mut b = gunzip_bytes(&topic().join("ext-l2.qcow2.gz"));
    let l1 = be64(&b, 40) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    put64(&mut b, l2 + 8, 0x0000_0001_0000_0001);
    let e = first_error(b, &OpenOptions::new().no_parents(true));
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert_eq!(e.offset(), Some(l2 as u64 + 8), "{e}");
    assert!(e.to_string().contains("subcluster bitmap"), "{e}");
}

#[test]
fn corpus_zstd_image_reads_as_its_zlib_twin() {
    // TRUTH.tsv gives basic.qcow2 (zlib) and basic-zstd.qcow2 one digest;
    // tests/corpus.rs hashes both whole. Here: the zstd one maps its data
    // as compressed clusters, and a stretch of them reads as the zlib twin.
    let Some(dir) = crate::corpus::corpus_dir() else {
        return;
    };
    let (zstd, zlib) = (
        dir.join("dissect/qcow2/basic-zstd.qcow2.gz"),
        dir.join("dissect/qcow2/basic.qcow2.gz"),
    );
    if !zstd.exists() || !zlib.exists() {
        return;
    }
    let a = mem_open(gunzip_bytes(&zstd), &OpenOptions::default()).expect("zstd image");
    let b = mem_open(gunzip_bytes(&zlib), &OpenOptions::default()).expect("zlib twin");
    let compressed: Vec<_> = a
        .map(0, a.size())
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == ExtentKind::Compressed)
        .collect();
    assert!(!compressed.is_empty(), "no compressed clusters mapped");
    let first = compressed[0];
    let len = first.len.min(8 << 20) as usize;
    let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
    a.read_at(&mut x, first.offset).unwrap();
    b.read_at(&mut y, first.offset).unwrap();
    assert!(x == y, "zstd and zlib images differ at {:#x}", first.offset);
}

#[test]
fn a_16_tib_disk_with_an_empty_l1_table_maps_and_reads_at_once() {
    // v3.qcow2 with its virtual size raised to 16 TiB and an all-zero L1
    // table of the 32,768 entries that size needs, appended to the file.
    let (mut b, _, _) = v3_tables();
    let l1 = (b.len() as u64).div_ceil(0x10000) * 0x10000;
    b.resize(l1 as usize + 32768 * 8, 0);
    put64(&mut b, 24, 1 << 44);
    put32(&mut b, 36, 32768);
    put64(&mut b, 40, l1);
    let img = mem_open(b, &OpenOptions::default()).expect("open");
    let map = img.map(0, img.size()).expect("map");
    assert_eq!(
        map,
        vec![Extent {
            offset: 0,
            len: 1 << 44,
            kind: ExtentKind::Unallocated
        }]
    );
    let mut buf = vec![7u8; 4096];
    img.read_at(&mut buf, (1 << 44) - 4096).expect("read");
    assert!(buf.iter().all(|&x| x == 0));
}

#[test]
fn cli_snapshot_flag_reads_an_internal_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let img = tmp.path().join("snapshots.qcow2");
    crate::common::gunzip(&topic().join("snapshots.qcow2.gz"), &img);
    let rows = tsv_rows(&topic().join("expected.tsv"));
    for wanted in ["first", "2"] {
        let opt = format!("snapshot={wanted}");
        let row = rows
            .iter()
            .find(|r| r[0] == "snapshots.qcow2" && r[1] == opt)
            .expect("expected.tsv row");
        let img_arg = img.to_string_lossy();
        let out = crate::common::diskimage(&["hash", &img_arg, "--snapshot", wanted]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&row[3]), "--snapshot {wanted}: {text}");
        let out = crate::common::diskimage(&["info", "--json", &img_arg, "--snapshot", wanted]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert!(v.to_string().contains("opened_snapshot.id"), "{v}");
    }
}
